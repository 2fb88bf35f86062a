// The corruption matrix: every bad file gives the right error type and a message naming the file and
// the offset or header field. Nothing crashes, nothing is skipped.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>

#include "common/data/dataset.h"
#include "common/util/error.h"
#include "data_test_util.h"

using namespace rx::data;
using rx::data::test_util::random_dataset;
using rx::data::test_util::read_bytes;
using rx::data::test_util::write_bytes;
using rx::testing::TempDir;

namespace {

// Runs fn and requires an IoError whose path() is `path` and whose message contains every one of
// `parts` (and the path).
void expect_io_error(const std::function<void()>& fn, const std::string& path,
                     const std::vector<std::string>& parts = {}) {
  try {
    fn();
    ADD_FAILURE() << "no IoError; expected one for " << path;
  } catch (const rx::IoError& e) {
    EXPECT_EQ(e.path(), path) << e.what();
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

// A DataError must carry the file and the byte offset as fields, not only in its text: this runs fn and
// requires a DataError whose path() is `path`, whose offset() is `offset` (kInFile: some offset inside
// the file, for gzip stream faults), and whose message contains every one of `parts`.
constexpr int64_t kInFile = -2;
void expect_data_error(const std::function<void()>& fn, const std::string& path, int64_t offset,
                       const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no DataError; expected one for " << path;
  } catch (const rx::DataError& e) {
    EXPECT_EQ(e.path(), path) << e.what();
    if (offset == kInFile) {
      EXPECT_GE(e.offset(), 0) << e.what();
      EXPECT_LE(e.offset(), static_cast<int64_t>(std::filesystem::file_size(path))) << e.what();
    } else {
      EXPECT_EQ(e.offset(), offset) << e.what();
    }
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind(path, 0), 0u) << "the message starts with the file: " << msg;
    if (offset >= 0) {
      EXPECT_NE(msg.find("offset " + std::to_string(offset)), std::string::npos) << msg;
    }
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

class CifarCorruption : public ::testing::Test {
 protected:
  void SetUp() override {
    write_cifar10(dir.path(), random_dataset(10, 3, 32, 32, 10, 1), random_dataset(4, 3, 32, 32, 10, 2));
    test_path = dir.file("test_batch.bin");
    bytes = read_bytes(test_path);
    ASSERT_EQ(bytes.size(), 4u * 3073);
  }
  void read_test() { read_cifar10(dir.path(), Split::kTest); }
  TempDir dir;
  std::string test_path;
  std::vector<uint8_t> bytes;
};

TEST_F(CifarCorruption, MissingDirectory) {
  expect_io_error([] { read_cifar10("/nonexistent/rx_cifar", Split::kTrain); },
                  "/nonexistent/rx_cifar/data_batch_1.bin", {"not found"});
}

TEST_F(CifarCorruption, MissingOneTrainFile) {
  std::filesystem::remove(dir.file("data_batch_3.bin"));
  expect_io_error([&] { read_cifar10(dir.path(), Split::kTrain); }, dir.file("data_batch_3.bin"));
}

TEST_F(CifarCorruption, SizeNotMultipleOfRecord) {
  bytes.insert(bytes.end(), {1, 2, 3, 4, 5});
  write_bytes(test_path, bytes);
  expect_data_error([&] { read_test(); }, test_path, 12292, {"not a multiple", "3073"});
}

TEST_F(CifarCorruption, TruncatedMidRecord) {
  bytes.resize(3073 * 3 + 100);
  write_bytes(test_path, bytes);
  expect_data_error([&] { read_test(); }, test_path, 9219, {"truncated record 3"});
}

TEST_F(CifarCorruption, EmptyFile) {
  write_bytes(test_path, {});
  expect_data_error([&] { read_test(); }, test_path, 0, {"empty"});
}

TEST_F(CifarCorruption, LabelOutOfRange) {
  bytes[2 * 3073] = 10;
  write_bytes(test_path, bytes);
  expect_data_error([&] { read_test(); }, test_path, 6146, {"record 2", "label 10"});
}

TEST_F(CifarCorruption, DirectoryInsteadOfFile) {
  std::filesystem::remove(test_path);
  std::filesystem::create_directory(test_path);
  expect_io_error([&] { read_test(); }, test_path, {"not a regular file"});
}

TEST(Cifar100Corruption, FineAndCoarseLabelOutOfRange) {
  TempDir dir;
  write_cifar100(dir.path(), random_dataset(3, 3, 32, 32, 100, 1), random_dataset(3, 3, 32, 32, 100, 2));
  const std::string path = dir.file("train.bin");
  auto bytes = read_bytes(path);
  auto fine = bytes;
  fine[1 * 3074 + 1] = 100;
  write_bytes(path, fine);
  expect_data_error([&] { read_cifar100(dir.path(), Split::kTrain); }, path, 3075, {"record 1", "label 100"});
  auto coarse = bytes;
  coarse[2 * 3074] = 20;
  write_bytes(path, coarse);
  expect_data_error([&] { read_cifar100(dir.path(), Split::kTrain); }, path, 6148,
                    {"record 2", "coarse label 20"});
  bytes.pop_back();
  write_bytes(path, bytes);
  expect_data_error([&] { read_cifar100(dir.path(), Split::kTrain); }, path, 6148, {"3074"});
  expect_io_error([&] { read_cifar100("/nonexistent", Split::kTest); }, "/nonexistent/test.bin");
}

class IdxCorruption : public ::testing::Test {
 protected:
  void SetUp() override {
    write_idx(dir.file("images"), dir.file("labels"), random_dataset(5, 1, 6, 7, 10, 3), false);
    images = read_bytes(dir.file("images"));
    labels = read_bytes(dir.file("labels"));
    ASSERT_EQ(images.size(), 16u + 5 * 42);
    ASSERT_EQ(labels.size(), 8u + 5);
  }
  void read() { read_idx(dir.file("images"), dir.file("labels")); }
  void write_images(const std::vector<uint8_t>& b) { write_bytes(dir.file("images"), b); }
  void write_labels(const std::vector<uint8_t>& b) { write_bytes(dir.file("labels"), b); }
  TempDir dir;
  std::vector<uint8_t> images, labels;
};

TEST_F(IdxCorruption, MissingFiles) {
  expect_io_error([&] { read_idx(dir.file("nope"), dir.file("labels")); }, dir.file("nope"), {"not found"});
  expect_io_error([&] { read_idx(dir.file("images"), dir.file("nope")); }, dir.file("nope"));
  expect_io_error([&] { read_fashion_mnist(dir.path(), Split::kTest); },
                  dir.file("t10k-images-idx3-ubyte.gz"));
}

TEST_F(IdxCorruption, BadMagic) {
  images[0] = 0x12;
  write_images(images);
  expect_data_error([&] { read(); }, dir.file("images"), 0, {"magic"});
}

TEST_F(IdxCorruption, BadElementType) {
  labels[2] = 0x0D;  // float
  write_labels(labels);
  expect_data_error([&] { read(); }, dir.file("labels"), 2, {"element type 0x0d"});
}

TEST_F(IdxCorruption, WrongNumberOfDimensions) {
  images[3] = 2;
  write_images(images);
  expect_data_error([&] { read(); }, dir.file("images"), 3, {"ndims"});
}

TEST_F(IdxCorruption, ZeroDimension) {
  images[12] = images[13] = images[14] = images[15] = 0;  // width
  write_images(images);
  expect_data_error([&] { read(); }, dir.file("images"), 12, {"dims[2]"});
}

TEST_F(IdxCorruption, TruncatedHeader) {
  images.resize(10);
  write_images(images);
  expect_data_error([&] { read(); }, dir.file("images"), 10, {"truncated IDX header"});  // where it ends
  write_images({0, 0});
  expect_data_error([&] { read(); }, dir.file("images"), 0, {"truncated IDX header"});
}

TEST_F(IdxCorruption, TruncatedData) {
  images.resize(images.size() - 10);
  write_images(images);
  expect_data_error([&] { read(); }, dir.file("images"), 216, {"truncated", "from offset 16"});
}

TEST_F(IdxCorruption, TrailingBytes) {
  labels.push_back(1);
  write_labels(labels);
  expect_data_error([&] { read(); }, dir.file("labels"), 13, {"trailing"});
}

TEST_F(IdxCorruption, CountMismatch) {
  write_idx(dir.file("images"), dir.file("labels4"), random_dataset(4, 1, 6, 7, 10, 3), false);
  images = read_bytes(dir.file("images"));
  write_idx(dir.file("images5"), dir.file("labels"), random_dataset(5, 1, 6, 7, 10, 3), false);
  expect_data_error([&] { read(); }, dir.file("labels"), 4, {dir.file("images"), "dims[0]"});
}

TEST_F(IdxCorruption, LabelOutOfRange) {
  labels[8 + 3] = 10;
  write_labels(labels);
  expect_data_error([&] { read(); }, dir.file("labels"), 11, {"label 10", "sample 3"});
}

TEST_F(IdxCorruption, TruncatedAndCorruptGzip) {
  write_idx(dir.file("images.gz"), dir.file("labels.gz"), random_dataset(50, 1, 6, 7, 10, 3), true);
  auto gz = read_bytes(dir.file("images.gz"));
  auto cut = gz;
  cut.resize(gz.size() / 2);
  write_bytes(dir.file("images.gz"), cut);
  expect_data_error([&] { read_idx(dir.file("images.gz"), dir.file("labels.gz")); }, dir.file("images.gz"),
                    kInFile, {"truncated gzip", "compressed offset"});
  auto garbage = gz;
  for (size_t i = 10; i < garbage.size(); ++i) garbage[i] = static_cast<uint8_t>(0xFF - i);
  write_bytes(dir.file("images.gz"), garbage);
  expect_data_error([&] { read_idx(dir.file("images.gz"), dir.file("labels.gz")); }, dir.file("images.gz"),
                    kInFile, {"gzip", "compressed offset"});
}

}  // namespace
