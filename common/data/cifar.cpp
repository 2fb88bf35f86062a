// CIFAR-10 / CIFAR-100 binary readers and writers.
#include <algorithm>
#include <filesystem>

#include "common/data/dataset.h"
#include "common/data/file_io.h"
#include "common/util/error.h"

namespace rx::data {
namespace {

namespace fs = std::filesystem;

constexpr int kSide = 32;
constexpr int kPixels = 3 * kSide * kSide;  // 3072

struct CifarFormat {
  int label_bytes;  // 1 (CIFAR-10) or 2 (CIFAR-100: coarse, fine)
  int num_classes;  // of the label we keep (the last label byte)
  int num_coarse;   // CIFAR-100 coarse classes (checked, dropped); 0 if none
  int64_t record() const { return label_bytes + kPixels; }
};

std::string join(const std::vector<std::string>& paths) {
  std::string s;
  for (const auto& p : paths) s += (s.empty() ? "" : ", ") + p;
  return s;
}

const CifarFormat kCifar10{1, 10, 0};
const CifarFormat kCifar100{2, 100, 20};

// Records in `size` bytes of `name`; a DataError naming the truncated record otherwise.
int64_t record_count(int64_t size, const CifarFormat& fmt, const std::string& name) {
  const int64_t rec = fmt.record();
  if (size == 0)
    throw DataError(name, 0, "empty file, expected records of " + std::to_string(rec) + " bytes");
  if (size % rec != 0) {
    const int64_t whole = size / rec;
    throw DataError(name, whole * rec,
                    "size " + std::to_string(size) + " bytes is not a multiple of the record size " +
                        std::to_string(rec) + "; truncated record " + std::to_string(whole) + " has " +
                        std::to_string(size - whole * rec) + " bytes");
  }
  return size / rec;
}

// Records of one file's size; IoError if it is missing or not a regular file.
int64_t file_record_count(const std::string& path, const CifarFormat& fmt) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw IoError(path, "file not found");
  if (!fs::is_regular_file(path, ec)) throw IoError(path, "not a regular file");
  const auto size = static_cast<int64_t>(fs::file_size(path, ec));
  if (ec) throw IoError(path, "cannot stat: " + ec.message());
  return record_count(size, fmt, path);
}

Dataset empty_cifar(int64_t count, const CifarFormat& fmt, std::string source) {
  Dataset d;
  d.count = count;
  d.channels = 3;
  d.height = d.width = kSide;
  d.num_classes = fmt.num_classes;
  d.source = std::move(source);
  d.pixels.resize(static_cast<size_t>(count) * kPixels);
  d.labels.resize(static_cast<size_t>(count));
  return d;
}

// Checks and copies `count` records from `in` (read from `name`) into d's samples [base, base + count).
void copy_records(const uint8_t* in, int64_t count, const CifarFormat& fmt, const std::string& name,
                  Dataset& d, int64_t base) {
  const int64_t rec = fmt.record();
  for (int64_t r = 0; r < count; ++r, in += rec) {
    if (fmt.num_coarse > 0 && in[0] >= fmt.num_coarse)
      throw DataError(name, r * rec,
                      "record " + std::to_string(r) + ": coarse label " + std::to_string(in[0]) +
                          " out of range [0, " + std::to_string(fmt.num_coarse) + ")");
    const int label = in[fmt.label_bytes - 1];
    if (label >= fmt.num_classes)
      throw DataError(name, r * rec + fmt.label_bytes - 1,
                      "record " + std::to_string(r) + ": label " + std::to_string(label) +
                          " out of range [0, " + std::to_string(fmt.num_classes) + ")");
    d.labels[base + r] = label;
    std::copy(in + fmt.label_bytes, in + rec, d.pixels.data() + (base + r) * kPixels);
  }
}

// Validates sizes of all files first, allocates the one pixel buffer, then reads file by file.
Dataset read_cifar_files(const std::vector<std::string>& paths, const CifarFormat& fmt) {
  int64_t total = 0;
  std::vector<int64_t> counts;
  for (const auto& path : paths) {
    counts.push_back(file_record_count(path, fmt));
    total += counts.back();
  }
  Dataset d = empty_cifar(total, fmt, join(paths));
  std::vector<uint8_t> buf;
  int64_t base = 0;
  for (size_t f = 0; f < paths.size(); ++f) {
    const auto& path = paths[f];
    detail::read_file(path, buf);
    if (static_cast<int64_t>(buf.size()) != counts[f] * fmt.record())
      throw DataError(path, "size changed while reading (now " + std::to_string(buf.size()) + " bytes)");
    copy_records(buf.data(), counts[f], fmt, path, d, base);
    base += counts[f];
  }
  return d;
}

// A dataset that cannot be written as CIFAR: the error names the folder being written and the dataset.
void check_writable(const std::string& dir, const Dataset& d, int num_classes) {
  const std::string what = "dataset '" + d.source + "'";
  if (d.channels != 3 || d.height != kSide || d.width != kSide)
    throw DataError(dir, what + " is " + std::to_string(d.channels) + "x" + std::to_string(d.height) + "x" +
                             std::to_string(d.width) + ", expected 3x32x32");
  if (static_cast<int64_t>(d.pixels.size()) != d.count * kPixels ||
      static_cast<int64_t>(d.labels.size()) != d.count)
    throw DataError(dir, what + " buffers do not match count " + std::to_string(d.count));
  for (int64_t i = 0; i < d.count; ++i)
    if (d.labels[i] < 0 || d.labels[i] >= num_classes)
      throw DataError(dir, what + " sample " + std::to_string(i) + " label " + std::to_string(d.labels[i]) +
                               " out of range [0, " + std::to_string(num_classes) + ")");
}

void write_records(const std::string& path, const Dataset& d, int64_t begin, int64_t end, bool cifar100) {
  const std::string out = encode_cifar_records(d, begin, end, cifar100);
  detail::write_file(path, reinterpret_cast<const uint8_t*>(out.data()), out.size());
}

}  // namespace

namespace {
std::vector<std::string> cifar10_files(const std::string& dir, Split split) {
  std::vector<std::string> paths;
  if (split == Split::kTrain) {
    for (int i = 1; i <= 5; ++i)
      paths.push_back(detail::file_in(dir, "data_batch_" + std::to_string(i) + ".bin"));
  } else {
    paths.push_back(detail::file_in(dir, "test_batch.bin"));
  }
  return paths;
}
std::string cifar100_file(const std::string& dir, Split split) {
  return detail::file_in(dir, split == Split::kTrain ? "train.bin" : "test.bin");
}
}  // namespace

Dataset read_cifar10(const std::string& dir, Split split) {
  return read_cifar_files(cifar10_files(dir, split), kCifar10);
}

Dataset read_cifar100(const std::string& dir, Split split) {
  return read_cifar_files({cifar100_file(dir, split)}, kCifar100);
}

Dataset read_cifar_records(const std::string& path, bool cifar100) {
  return read_cifar_files({path}, cifar100 ? kCifar100 : kCifar10);
}

int64_t count_cifar10(const std::string& dir, Split split) {
  int64_t n = 0;
  for (const auto& path : cifar10_files(dir, split)) n += file_record_count(path, kCifar10);
  return n;
}

int64_t count_cifar100(const std::string& dir, Split split) {
  return file_record_count(cifar100_file(dir, split), kCifar100);
}

Dataset decode_cifar_records(const std::string& bytes, bool cifar100, const std::string& source) {
  const CifarFormat& fmt = cifar100 ? kCifar100 : kCifar10;
  const int64_t count = record_count(static_cast<int64_t>(bytes.size()), fmt, source);
  Dataset d = empty_cifar(count, fmt, source);
  copy_records(reinterpret_cast<const uint8_t*>(bytes.data()), count, fmt, source, d, 0);
  return d;
}

std::string encode_cifar_records(const Dataset& d, int64_t begin, int64_t end, bool cifar100) {
  check_writable(d.source, d, cifar100 ? 100 : 10);
  detail::check_block(d, begin, end);
  const int64_t rec = (cifar100 ? 2 : 1) + kPixels;
  std::string out(static_cast<size_t>((end - begin) * rec), '\0');
  char* o = out.data();
  for (int64_t i = begin; i < end; ++i) {
    // Dataset keeps no coarse labels: fine / 5 stands in (see write_cifar100).
    if (cifar100) *o++ = static_cast<char>(d.labels[i] / 5);
    *o++ = static_cast<char>(d.labels[i]);
    o = std::copy(d.sample(i), d.sample(i) + kPixels, o);
  }
  return out;
}

void write_cifar10(const std::string& dir, const Dataset& train, const Dataset& test) {
  check_writable(dir, train, 10);
  check_writable(dir, test, 10);
  // The reader rejects empty files (a failed download), so every file needs a record.
  if (train.count < 5 || test.count < 1)
    throw DataError(dir, "CIFAR-10 needs >= 5 train and >= 1 test samples, got " +
                             std::to_string(train.count) + " and " + std::to_string(test.count));
  for (int f = 0; f < 5; ++f) {
    const int64_t begin = train.count * f / 5, end = train.count * (f + 1) / 5;
    write_records(detail::file_in(dir, "data_batch_" + std::to_string(f + 1) + ".bin"), train, begin, end,
                  false);
  }
  write_records(detail::file_in(dir, "test_batch.bin"), test, 0, test.count, false);
}

void write_cifar100(const std::string& dir, const Dataset& train, const Dataset& test) {
  check_writable(dir, train, 100);
  check_writable(dir, test, 100);
  if (train.count < 1 || test.count < 1)
    throw DataError(dir, "CIFAR-100 needs >= 1 train and >= 1 test sample");
  write_records(detail::file_in(dir, "train.bin"), train, 0, train.count, true);
  write_records(detail::file_in(dir, "test.bin"), test, 0, test.count, true);
}

}  // namespace rx::data
