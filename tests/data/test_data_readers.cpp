// Round trips of the CIFAR-10/100 and IDX writers and readers, the synthetic stand-in, load_dataset.
#include <gtest/gtest.h>

#include <array>

#include "common/data/dataset.h"
#include "common/data/file_io.h"
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

namespace {

// Samples [begin, end) of d, built independently of the encoders.
Dataset slice(const Dataset& d, int64_t begin, int64_t end) {
  Dataset s = d;
  s.count = end - begin;
  s.pixels.assign(d.pixels.begin() + begin * d.sample_bytes(), d.pixels.begin() + end * d.sample_bytes());
  s.labels.assign(d.labels.begin() + begin, d.labels.begin() + end);
  return s;
}

std::string as_string(const std::vector<uint8_t>& b) { return std::string(b.begin(), b.end()); }

template <class F>
std::string data_error_of(F&& f) {
  try {
    f();
  } catch (const rx::DataError& e) {
    return e.what();
  }
  return "no DataError";
}

}  // namespace

// [Shard blocks] The encoders are the file writers' encoders: a whole-dataset block is byte for byte
// the file, and any block decodes, from memory, to exactly its samples.
TEST(ShardBlocks, IdxBlocksAreTheWritersBytesAndRoundTrip) {
  TempDir dir;
  const Dataset d = random_dataset(11, 1, 6, 7, 10, 21);
  write_idx(dir.file("i"), dir.file("l"), d, false);
  EXPECT_EQ(as_string(rx::data::test_util::read_bytes(dir.file("i"))), encode_idx_images(d, 0, d.count));
  EXPECT_EQ(as_string(rx::data::test_util::read_bytes(dir.file("l"))), encode_idx_labels(d, 0, d.count));
  // The layout itself, pinned byte for byte (the comparisons above share the encoders with write_idx).
  const std::string images = encode_idx_images(d, 3, 8), labels = encode_idx_labels(d, 3, 8);
  EXPECT_EQ(images.substr(0, 16), std::string("\0\0\x08\x03\0\0\0\x05\0\0\0\x06\0\0\0\x07", 16));
  EXPECT_EQ(images.size(), 16u + 5 * 42);
  EXPECT_EQ(static_cast<uint8_t>(images[16]), d.sample(3)[0]);
  EXPECT_EQ(labels.substr(0, 8), std::string("\0\0\x08\x01\0\0\0\x05", 8));
  ASSERT_EQ(labels.size(), 8u + 5);
  EXPECT_EQ(static_cast<uint8_t>(labels[8]), d.labels[3]);
  for (auto [b, e] : {std::pair<int64_t, int64_t>{0, 11}, {3, 8}, {10, 11}}) {
    const Dataset got = decode_idx(encode_idx_images(d, b, e), encode_idx_labels(d, b, e), "block");
    expect_same(got, slice(d, b, e));
    EXPECT_EQ(got.source, "block (images), block (labels)");
  }
}

TEST(ShardBlocks, CifarBlocksRoundTrip) {
  const Dataset c10 = random_dataset(9, 3, 32, 32, 10, 22);
  expect_same(decode_cifar_records(encode_cifar_records(c10, 2, 7, false), false, "b10"), slice(c10, 2, 7));
  const Dataset c100 = random_dataset(9, 3, 32, 32, 100, 23);
  const std::string bytes = encode_cifar_records(c100, 4, 9, true);
  ASSERT_EQ(bytes.size(), 5u * 3074);
  EXPECT_EQ(static_cast<uint8_t>(bytes[0]), c100.labels[4] / 5);  // the writer's stand-in coarse byte
  expect_same(decode_cifar_records(bytes, true, "b100"), slice(c100, 4, 9));
  EXPECT_NE(data_error_of([&] { encode_cifar_records(c10, 5, 10, false); }).find("outside the 9 samples"),
            std::string::npos);
}

TEST(ShardBlocks, BadBlocksNameTheirSource) {
  const Dataset d = random_dataset(4, 1, 6, 7, 10, 24);
  std::string images = encode_idx_images(d, 0, 4);
  images.pop_back();  // one pixel short
  const std::string idx_msg =
      data_error_of([&] { decode_idx(images, encode_idx_labels(d, 0, 4), "rank 1's block"); });
  EXPECT_NE(idx_msg.find("rank 1's block (images)"), std::string::npos) << idx_msg;
  EXPECT_NE(idx_msg.find("truncated"), std::string::npos) << idx_msg;
  const std::string cifar_msg =
      data_error_of([&] { decode_cifar_records(std::string(3072, '\0'), false, "b"); });
  EXPECT_NE(cifar_msg.find("not a multiple of the record size 3073"), std::string::npos) << cifar_msg;
  EXPECT_NE(data_error_of([&] { encode_idx_images(d, 2, 5); }).find("outside the 4 samples"),
            std::string::npos);
  EXPECT_NE(data_error_of([&] { encode_idx_labels(d, 3, 2); }).find("outside the 4 samples"),
            std::string::npos);
  EXPECT_THROW(encode_idx_images(random_dataset(2, 3, 4, 4, 10, 1), 0, 2), rx::DataError);  // not 1 channel
}

// [Sample count] What the coordinator's shard plan sizes itself by: the readers' counts, read from
// file sizes and headers only.
TEST(SampleCount, EqualsWhatTheReadersLoad) {
  TempDir dir;
  write_cifar10(dir.file("c10"), random_dataset(23, 3, 32, 32, 10, 1), random_dataset(7, 3, 32, 32, 10, 2));
  write_cifar100(dir.file("c100"), random_dataset(6, 3, 32, 32, 100, 3),
                 random_dataset(4, 3, 32, 32, 100, 4));
  EXPECT_EQ(sample_count("cifar10", dir.file("c10"), Split::kTrain), 23);
  EXPECT_EQ(sample_count("synthetic", dir.file("c10"), Split::kTest), 7);
  EXPECT_EQ(sample_count("cifar100", dir.file("c100"), Split::kTrain), 6);
  EXPECT_EQ(sample_count("cifar100", dir.file("c100"), Split::kTest), 4);
  EXPECT_EQ(sample_count("synthetic", "", Split::kTrain), kSyntheticTrain);
  for (bool gz : {false, true}) {
    const std::string sub = dir.file(gz ? "gz" : "plain"), ext = gz ? ".gz" : "";
    const Dataset d = random_dataset(13, 1, 28, 28, 10, 5);
    write_idx(sub + "/t10k-images-idx3-ubyte" + ext, sub + "/t10k-labels-idx1-ubyte" + ext, d, gz);
    EXPECT_EQ(sample_count("idx", sub, Split::kTest), 13);
    EXPECT_EQ(sample_count("fashion_mnist", sub, Split::kTest), load_dataset("idx", sub, Split::kTest).count);
  }
  EXPECT_THROW(sample_count("idx", dir.file("plain"), Split::kTrain), rx::IoError);  // no train files
  std::filesystem::create_directories(dir.file("bad"));
  write_bytes(dir.file("bad/train-images-idx3-ubyte"), {0, 0, 8, 1, 0, 0, 0, 5});  // a labels magic
  write_bytes(dir.file("bad/train-labels-idx1-ubyte"), {0, 0, 8, 1, 0, 0, 0, 5});
  EXPECT_NE(data_error_of([&] { sample_count("idx", dir.file("bad"), Split::kTrain); }).find("bad IDX magic"),
            std::string::npos);
  EXPECT_THROW(sample_count("imagenet", dir.path(), Split::kTrain), rx::ConfigError);
}

// [Trusted count] A header that declares more images than its file holds is not believed: the count
// sizes the coordinator's shard plan, so an 8-byte lie must not become gigabytes of indices.
TEST(SampleCount, HeaderCountMustFitTheFile) {
  TempDir dir;
  const Dataset d = random_dataset(13, 1, 28, 28, 10, 7);
  std::string img = encode_idx_images(d, 0, d.count);
  img[4] = '\x7f';  // count 0x7f00000d: two billion images in a 10 KB file
  const std::string lab = encode_idx_labels(d, 0, d.count);
  for (bool gz : {false, true}) {
    const std::string sub = dir.file(gz ? "gz" : "plain"), ext = gz ? ".gz" : "";
    for (const auto& [name, bytes] : {std::pair<std::string, std::string>{"train-images-idx3-ubyte", img},
                                      {"train-labels-idx1-ubyte", lab}})
      rx::data::detail::write_file(sub + "/" + name + ext, reinterpret_cast<const uint8_t*>(bytes.data()),
                                   bytes.size(), gz);
    const std::string msg = data_error_of([&] { sample_count("idx", sub, Split::kTrain); });
    EXPECT_NE(msg.find("declares 2130706445 images"), std::string::npos) << msg;
    EXPECT_NE(msg.find(gz ? "gzip file's trailer" : "file holds 10208"), std::string::npos) << msg;
  }
}
