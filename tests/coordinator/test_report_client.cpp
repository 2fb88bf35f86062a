// The worker-side ReportClient against a real in-process Listener/Session on loopback: reports
// land with the right secret, a wrong secret or a dead/slow server throws IoError naming the URL.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstring>
#include <thread>

#include "common/data/dataset.h"
#include "common/data/shard_plan.h"
#include "common/report/report_client.h"
#include "common/util/error.h"
#include "coordinator/http/listener.h"
#include "coordinator/util/util.h"
#include "tests/coordinator/test_support.h"

namespace rx::coord {
namespace {

namespace net = boost::asio;
using nlohmann::json;
using namespace std::chrono_literals;

class ReportClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServiceOptions o = test_service_options(dir_.path(), 4);
    o.self_url.clear();                    // set below to the listener's real URL, once its port is bound
    o.paths.data_roots.push_back("/tmp");  // tests write datasets under /tmp
    service_ = std::make_unique<JobService>(o, std::make_unique<FakeLauncher>(fake_));
    state_ = std::make_unique<ServiceState>(*service_);
    listener_ = std::make_shared<Listener>(
        ioc_, net::ip::tcp::endpoint{net::ip::make_address("127.0.0.1"), 0}, *state_,
        SessionTimeouts{std::chrono::seconds(5), std::chrono::seconds(5)});
    url_ = "http://127.0.0.1:" + std::to_string(listener_->port());
    service_->set_self_url(url_);
    listener_->run();
    thread_ = std::thread([this] { ioc_.run(); });
    auto out = service_->submit("anonymous",
                                {{"config", "fashion_mnist_small"},
                                 {"ranks", 2},
                                 {"overrides", {{"training.epochs", 1}, {"data.max_train_samples", 300}}}},
                                "");
    id_ = out.id;
    ASSERT_EQ(fake_->started.size(), 1u);
    secret_ = fake_->started[0].secret;
    EXPECT_EQ(fake_->started[0].coordinator_url, url_);
  }
  void TearDown() override {
    ioc_.stop();
    thread_.join();
  }

  TempDir dir_;
  std::shared_ptr<FakeState> fake_ = std::make_shared<FakeState>();
  std::unique_ptr<JobService> service_;
  std::unique_ptr<ServiceState> state_;
  net::io_context ioc_;
  std::shared_ptr<Listener> listener_;
  std::thread thread_;
  std::string url_, id_, secret_;
};

TEST_F(ReportClientTest, PostsProgressAndResult) {
  report::ReportClient client(url_, id_, secret_, 5000ms);
  client.post({{"type", "progress"},
               {"epoch", 1},
               {"epochs", 1},
               {"step", 3},
               {"steps_per_epoch", 4},
               {"loss", 1.5},
               {"ranks", {{{"rank", 0}, {"images_per_sec", 10.0}, {"peak_memory_bytes", 5}}}}});
  auto j = service_->get(id_);
  ASSERT_TRUE(j);
  EXPECT_EQ(j->last_progress["step"], 3);
  client.post({{"type", "result"}, {"record", {{"final_test_accuracy", 0.25}}}});
  EXPECT_EQ(service_->result(id_)["final_test_accuracy"], 0.25);
}

TEST_F(ReportClientTest, WrongSecretThrowsNamingTheUrl) {
  report::ReportClient client(url_, id_, "not-the-secret", 5000ms);
  try {
    client.post({{"type", "progress"}});
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find(url_ + "/v1/jobs/" + id_ + "/reports"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("401"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(service_->get(id_)->last_progress.is_null());
}

TEST_F(ReportClientTest, GetShardVerifiesChecksum) {
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "fashion-mnist not installed";
  report::ReportClient client(url_, id_, secret_, 5000ms);
  json s = client.get_shard(1, 2);
  EXPECT_EQ(s["rank"], 1);
  EXPECT_EQ(s["epoch"], 2);
  EXPECT_EQ(s["indices"].size(), 150u);  // ceil(300 / 2)
}

TEST_F(ReportClientTest, ShardBytesForCoordinatorSourcedData) {
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "fashion-mnist not installed";
  // The fixture's job reads a shared dataset: bytes are refused.
  report::ReportClient shared(url_, id_, secret_, 5000ms);
  EXPECT_THROW(shared.get_shard_data(0, "images"), IoError);
  auto out =
      service_->submit("anonymous",
                       {{"config", "fashion_mnist_small"},
                        {"ranks", 2},
                        {"overrides", {{"data.source", "coordinator"}, {"data.max_train_samples", 301}}}},
                       "");
  const std::string secret = fake_->started.back().secret;
  report::ReportClient client(url_, out.id, secret, 20000ms);
  const std::string images = client.get_shard_data(1, "images");
  const std::string labels = client.get_shard_data(1, "labels");
  const auto ds = data::read_fashion_mnist("/usr/share/datasets/fashion-mnist", data::Split::kTrain);
  const auto block = data::static_block(301, 2, 1);
  const int64_t n = block.end - block.begin;
  ASSERT_EQ(images.size(), static_cast<size_t>(16 + n * 784));
  ASSERT_EQ(labels.size(), static_cast<size_t>(8 + n));
  EXPECT_EQ(static_cast<unsigned char>(images[3]), 3u);  // IDX magic 0x00000803
  EXPECT_EQ(0, std::memcmp(images.data() + 16, ds.sample(block.begin), static_cast<size_t>(n * 784)));
  for (int64_t i = 0; i < n; ++i)
    ASSERT_EQ(static_cast<int32_t>(static_cast<unsigned char>(labels[8 + i])), ds.labels[block.begin + i])
        << i;
  report::ReportClient wrong(url_, out.id, "nope", 5000ms);
  EXPECT_THROW(wrong.get_shard_data(1, "images"), IoError);
  EXPECT_THROW(client.get_shard_data(1, "bogus"), IoError);
}

TEST_F(ReportClientTest, ShardBytesCifarRecords) {
  TempDir data_dir;
  data::write_synthetic_cifar10(data_dir.path(), 50, 10, 7);
  auto out = service_->submit("anonymous",
                              {{"config", "fashion_mnist_small"},
                               {"ranks", 2},
                               {"overrides",
                                {{"data.source", "coordinator"},
                                 {"data.format", "synthetic"},
                                 {"data.path", data_dir.path()},
                                 {"data.max_train_samples", 0}}}},
                              "");
  report::ReportClient client(url_, out.id, fake_->started.back().secret, 20000ms);
  const std::string recs = client.get_shard_data(0);
  const auto ds = data::read_cifar10(data_dir.path(), data::Split::kTrain);
  const auto block = data::static_block(50, 2, 0);
  ASSERT_EQ(recs.size(), static_cast<size_t>((block.end - block.begin) * 3073));
  for (int64_t i = block.begin; i < block.end; ++i) {
    const char* rec = recs.data() + (i - block.begin) * 3073;
    ASSERT_EQ(static_cast<unsigned char>(rec[0]), ds.labels[i]);
    ASSERT_EQ(0, std::memcmp(rec + 1, ds.sample(i), 3072));
  }
  // The index plan for synthetic data reads its size from the files too.
  EXPECT_EQ(client.get_shard(1, 0)["dataset_size"], 50);
}

TEST(ReportClientFailures, RefusedAndTimeout) {
  // A port with nothing listening: connection refused.
  net::io_context ioc;
  net::ip::tcp::acceptor probe(ioc, {net::ip::make_address("127.0.0.1"), 0});
  const auto dead_port = probe.local_endpoint().port();
  probe.close();
  report::ReportClient dead("http://127.0.0.1:" + std::to_string(dead_port), "j1", "s", 2000ms);
  EXPECT_THROW(dead.post({{"type", "progress"}}), IoError);

  // A server that accepts but never answers: the deadline fires.
  net::ip::tcp::acceptor silent(ioc, {net::ip::make_address("127.0.0.1"), 0});
  report::ReportClient slow("http://127.0.0.1:" + std::to_string(silent.local_endpoint().port()), "j1", "s",
                            300ms);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    slow.post({{"type", "progress"}});
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("timed out"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_THROW(report::ReportClient("https://x:1", "j", "s", 1000ms), ConfigError);
}

}  // namespace
}  // namespace rx::coord
