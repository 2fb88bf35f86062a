#pragma once
// In-memory image datasets and their on-disk formats (CIFAR-10/100 binary, IDX as used by MNIST and
// Fashion-MNIST). Torch-free: the coordinator links this through rx_core.
//
// [One buffer] A dataset is read once into ONE contiguous uint8 buffer (count * C * H * W bytes,
// channel-planar per sample), never one allocation per image, so the loader can index it with plain
// pointer arithmetic and the coordinator can ship a contiguous slice of it.
//
// Errors: a missing or unreadable file -> rx::IoError(path); bad content (size not a multiple of the
// record size, truncated, bad IDX magic or dimensions, label out of range) -> rx::DataError whose
// message names the file and the byte offset or header field. Nothing is skipped silently.
#include <cstdint>
#include <string>
#include <vector>

namespace rx::data {

struct Dataset {
  std::vector<uint8_t> pixels;  // count * channels * height * width, channel-planar (CHW) per sample
  std::vector<int32_t> labels;  // count
  int64_t count = 0;
  int channels = 0, height = 0, width = 0;
  int num_classes = 0;
  std::string source;  // path(s) read, for messages

  int64_t sample_bytes() const { return int64_t{channels} * height * width; }
  const uint8_t* sample(int64_t i) const;  // pointer to sample i's CHW bytes
  Dataset take_first(int64_t n) const;     // first n samples (n<=0 or n>=count: copy of all)
};

enum class Split { kTrain, kTest };

// CIFAR-10 binary: data_batch_1.bin..data_batch_5.bin (train) or test_batch.bin in `dir`; records of
// 1 label byte + 3072 pixel bytes (R, G, B planes of 32x32).
Dataset read_cifar10(const std::string& dir, Split split);
// CIFAR-100 binary: train.bin / test.bin in `dir`; records of coarse label, fine label, 3072 pixels.
// Uses the fine labels (100 classes); coarse labels are checked (< 20) and dropped.
Dataset read_cifar100(const std::string& dir, Split split);
// One file of CIFAR records (what the coordinator ships as a rank's shard): 1 + 3072 bytes per
// record for CIFAR-10, 2 + 3072 (coarse, fine) for CIFAR-100.
Dataset read_cifar_records(const std::string& path, bool cifar100);
// IDX (ubyte) image file [N, H, W] and label file [N], each plain or gzip-compressed (detected by the
// gzip magic, not the name). Labels must be < num_classes. Offsets in messages of a .gz file are
// offsets into the decompressed stream.
Dataset read_idx(const std::string& images_path, const std::string& labels_path, int num_classes = 10);
// {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] in `dir` (.gz preferred when both exist).
Dataset read_fashion_mnist(const std::string& dir, Split split);
// The formats data.format names: "cifar10" | "cifar100" | "idx" (alias "fashion_mnist", "mnist") |
// "synthetic" (CIFAR-10 files in data.path, written by write_synthetic_cifar10; with an empty path,
// make_synthetic_cifar10(kSyntheticTrain/kSyntheticTest, kSyntheticSeed) generated in memory).
// Unknown name -> ConfigError("data.format").
enum class Format { kCifar10, kCifar100, kIdx, kSynthetic };
Format parse_format(const std::string& name);
Dataset load_dataset(const std::string& format, const std::string& path, Split split);

// [Sample count] A split's size from file sizes (CIFAR) or the IDX header's count alone, without
// reading the pixels: what the coordinator's shard plan needs. Same errors as the readers for a
// missing file, a size that is not whole records, or a bad IDX magic.
int64_t count_cifar10(const std::string& dir, Split split);
int64_t count_cifar100(const std::string& dir, Split split);
int64_t count_fashion_mnist(const std::string& dir, Split split);
int64_t sample_count(const std::string& format, const std::string& path, Split split);

// [Shard blocks] Samples [begin, end) of a dataset in its format's file layout: how the coordinator
// ships a rank's block (data.source "coordinator") and how the worker reads it back, from memory.
// One encoder and one decoder per format, shared by both ends and by the file writers below, so the
// two ends cannot disagree. Decoding checks exactly what reading the same bytes from a file would;
// `source` names the block in messages (e.g. the URL it came from).
std::string encode_idx_images(const Dataset& d, int64_t begin, int64_t end);
std::string encode_idx_labels(const Dataset& d, int64_t begin, int64_t end);
// CIFAR-10 records, or CIFAR-100's with the stand-in coarse byte of write_cifar100.
std::string encode_cifar_records(const Dataset& d, int64_t begin, int64_t end, bool cifar100);
Dataset decode_idx(const std::string& images, const std::string& labels, const std::string& source,
                   int num_classes = 10);
Dataset decode_cifar_records(const std::string& bytes, bool cifar100, const std::string& source);

// Writers (tests, tools, the synthetic stand-in). Each creates `dir` if needed; IoError on failure.
// write_cifar10 spreads `train` over data_batch_1..5 (as evenly as possible) and writes `test` to
// test_batch.bin. Datasets must be 3x32x32 with labels < 10, train.count >= 5, test.count >= 1 (the
// readers reject empty files). write_cifar100 needs >= 1 sample per split.
void write_cifar10(const std::string& dir, const Dataset& train, const Dataset& test);
// train.bin / test.bin; labels < 100. Dataset keeps no coarse labels, so the coarse byte is written
// as fine / 5 (a stand-in, not the real CIFAR-100 super-class mapping).
void write_cifar100(const std::string& dir, const Dataset& train, const Dataset& test);
// IDX ubyte pair for a single-channel dataset; gzip-compressed when `gzip`.
void write_idx(const std::string& images_path, const std::string& labels_path, const Dataset& d, bool gzip);

// [Synthetic stand-in] NOT real data. A 10-class, 3x32x32 dataset with a learnable signal: each class
// has its own base colour and stripe orientation/frequency, plus per-pixel uniform noise, so a
// small model learns it in a few hundred steps while a constant predictor stays at 10%. Deterministic
// in (seed, split, count); labels are balanced (i % 10). For fast tests and benchmarks only.
Dataset make_synthetic_cifar10(int64_t count, uint64_t seed, Split split);
constexpr int64_t kSyntheticTrain = 50000, kSyntheticTest = 10000;
constexpr uint64_t kSyntheticSeed = 1;
// Writes make_synthetic_cifar10(train_count, seed, kTrain) / (test_count, seed, kTest) as CIFAR-10
// files in `dir`, readable with read_cifar10 or load_dataset("synthetic", dir, ...).
void write_synthetic_cifar10(const std::string& dir, int64_t train_count, int64_t test_count, uint64_t seed);

}  // namespace rx::data
