// Round trips of the CIFAR-10/100 and IDX writers and readers, the synthetic stand-in, load_dataset.
#include <gtest/gtest.h>

#include <array>

#include "common/data/dataset.h"
#include "common/util/error.h"
#include "data_test_util.h"

using namespace rx::data;
using rx::data::test_util::random_dataset;
using rx::data::test_util::write_bytes;
using rx::testing::TempDir;

namespace {

void expect_same(const Dataset& a, const Dataset& b) {
  EXPECT_EQ(a.count, b.count);
  EXPECT_EQ(a.channels, b.channels);
  EXPECT_EQ(a.height, b.height);
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.num_classes, b.num_classes);
  EXPECT_TRUE(a.labels == b.labels) << "labels differ";
  EXPECT_TRUE(a.pixels == b.pixels) << "pixels differ";
}

}  // namespace

TEST(CifarFormat, ReadsHandWrittenCifar10Record) {
  // One record built byte by byte: label 7, then R, G, B planes with value (plane, index) patterns.
  TempDir dir;
  std::vector<uint8_t> rec = {7};
  for (int c = 0; c < 3; ++c)
    for (int p = 0; p < 1024; ++p) rec.push_back(static_cast<uint8_t>((c * 50 + p) % 256));
  write_bytes(dir.file("test_batch.bin"), rec);
  const Dataset d = read_cifar10(dir.path(), Split::kTest);
  ASSERT_EQ(d.count, 1);
  EXPECT_EQ(d.labels[0], 7);
  EXPECT_EQ(d.num_classes, 10);
  ASSERT_EQ(d.pixels.size(), 3072u);
  EXPECT_EQ(d.sample(0)[0], 0);            // R(0,0)
  EXPECT_EQ(d.sample(0)[1024], 50);        // G(0,0)
  EXPECT_EQ(d.sample(0)[2048 + 33], 133);  // B(1,1)
  EXPECT_NE(d.source.find("test_batch.bin"), std::string::npos);
}

TEST(CifarFormat, ReadsHandWrittenCifar100RecordFineLabel) {
  TempDir dir;
  std::vector<uint8_t> file;
  for (int r = 0; r < 2; ++r) {
    file.push_back(static_cast<uint8_t>(19 - r));  // coarse
    file.push_back(static_cast<uint8_t>(99 - r));  // fine
    for (int p = 0; p < 3072; ++p) file.push_back(static_cast<uint8_t>(r + p));
  }
  write_bytes(dir.file("train.bin"), file);
  const Dataset d = read_cifar100(dir.path(), Split::kTrain);
  ASSERT_EQ(d.count, 2);
  EXPECT_EQ(d.num_classes, 100);
  EXPECT_EQ(d.labels, (std::vector<int32_t>{99, 98}));
  EXPECT_EQ(d.sample(1)[0], 1);
  EXPECT_EQ(d.sample(1)[3071], static_cast<uint8_t>(1 + 3071));
}

TEST(CifarRoundTrip, Cifar10TrainAndTestExact) {
  TempDir dir;
  const Dataset train = random_dataset(23, 3, 32, 32, 10, 1);
  const Dataset test = random_dataset(7, 3, 32, 32, 10, 2);
  write_cifar10(dir.path(), train, test);
  for (int i = 1; i <= 5; ++i)
    EXPECT_TRUE(std::filesystem::exists(dir.file("data_batch_" + std::to_string(i) + ".bin")));
  // 23 records over 5 files: sizes 4,5,4,5,5 (as even as possible), in order.
  EXPECT_EQ(std::filesystem::file_size(dir.file("data_batch_1.bin")), 4u * 3073);
  expect_same(read_cifar10(dir.path(), Split::kTrain), train);
  expect_same(read_cifar10(dir.path(), Split::kTest), test);
  expect_same(load_dataset("cifar10", dir.path(), Split::kTest), test);
}

TEST(CifarRoundTrip, Cifar100TrainAndTestExact) {
  TempDir dir;
  const Dataset train = random_dataset(31, 3, 32, 32, 100, 3);
  const Dataset test = random_dataset(9, 3, 32, 32, 100, 4);
  write_cifar100(dir.path(), train, test);
  expect_same(read_cifar100(dir.path(), Split::kTrain), train);
  expect_same(load_dataset("cifar100", dir.path(), Split::kTest), test);
}

TEST(CifarRoundTrip, WriterRejectsWrongGeometryAndLabels) {
  TempDir dir;
  const Dataset ok = random_dataset(5, 3, 32, 32, 10, 5);
  EXPECT_THROW(write_cifar10(dir.path(), random_dataset(5, 1, 28, 28, 10, 5), ok), rx::DataError);
  Dataset bad = ok;
  bad.labels[2] = 10;
  EXPECT_THROW(write_cifar10(dir.path(), bad, ok), rx::DataError);
}

TEST(IdxRoundTrip, PlainAndGzipExact) {
  TempDir dir;
  const Dataset d = random_dataset(17, 1, 28, 28, 10, 6);
  for (bool gz : {false, true}) {
    const std::string img = dir.file(gz ? "i.gz" : "i"), lab = dir.file(gz ? "l.gz" : "l");
    write_idx(img, lab, d, gz);
    const auto raw = rx::data::test_util::read_bytes(img);
    ASSERT_GE(raw.size(), 2u);
    EXPECT_EQ(raw[0] == 0x1f && raw[1] == 0x8b, gz);
    Dataset back = read_idx(img, lab);
    expect_same(back, d);
  }
}

TEST(Synthetic, DeterministicBalancedAndLearnable) {
  TempDir dir;
  write_synthetic_cifar10(dir.path(), 2000, 500, 42);
  const Dataset train = load_dataset("synthetic", dir.path(), Split::kTrain);
  const Dataset test = load_dataset("synthetic", dir.path(), Split::kTest);
  ASSERT_EQ(train.count, 2000);
  ASSERT_EQ(test.count, 500);
  expect_same(train, make_synthetic_cifar10(2000, 42, Split::kTrain));
  EXPECT_FALSE(make_synthetic_cifar10(10, 43, Split::kTrain).pixels == train.take_first(10).pixels);
  std::array<int, 10> hist{};
  for (int32_t l : train.labels) ++hist[l];
  for (int h : hist) EXPECT_EQ(h, 200);

  // Learnable: nearest class-mean (per-channel mean colour) classifies the test split well.
  std::array<std::array<double, 3>, 10> centroid{};
  for (int64_t i = 0; i < train.count; ++i)
    for (int c = 0; c < 3; ++c) {
      double s = 0;
      for (int p = 0; p < 1024; ++p) s += train.sample(i)[c * 1024 + p];
      centroid[train.labels[i]][c] += s / 1024 / 200;
    }
  int correct = 0;
  for (int64_t i = 0; i < test.count; ++i) {
    std::array<double, 3> m{};
    for (int c = 0; c < 3; ++c) {
      for (int p = 0; p < 1024; ++p) m[c] += test.sample(i)[c * 1024 + p];
      m[c] /= 1024;
    }
    int best = 0;
    double best_d = 1e300;
    for (int k = 0; k < 10; ++k) {
      double dist = 0;
      for (int c = 0; c < 3; ++c) dist += (m[c] - centroid[k][c]) * (m[c] - centroid[k][c]);
      if (dist < best_d) best_d = dist, best = k;
    }
    correct += best == test.labels[i];
  }
  EXPECT_GT(correct, 0.5 * test.count) << "synthetic classes should be separable (chance is 10%)";
}

TEST(Dataset, TakeFirstAndSample) {
  const Dataset d = random_dataset(10, 3, 4, 5, 10, 7);
  const Dataset head = d.take_first(3);
  EXPECT_EQ(head.count, 3);
  EXPECT_EQ(head.pixels.size(), 3u * 60);
  EXPECT_EQ(head.labels, std::vector<int32_t>(d.labels.begin(), d.labels.begin() + 3));
  EXPECT_EQ(d.sample(2), d.pixels.data() + 120);
  EXPECT_EQ(d.take_first(0).count, 10);
  EXPECT_EQ(d.take_first(99).count, 10);
  EXPECT_THROW(d.sample(10), rx::InternalError);
}

TEST(LoadDataset, UnknownFormatIsConfigError) {
  try {
    load_dataset("imagenet", "/nonexistent", Split::kTrain);
    FAIL() << "expected ConfigError";
  } catch (const rx::ConfigError& e) {
    EXPECT_EQ(e.field(), "data.format");
    EXPECT_NE(std::string(e.what()).find("imagenet"), std::string::npos);
  }
}
