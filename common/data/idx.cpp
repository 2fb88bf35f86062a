// IDX (MNIST / Fashion-MNIST) reader and writer, plain or gzip.
#include <algorithm>
#include <filesystem>
#include <fstream>

#include "common/data/dataset.h"
#include "common/data/file_io.h"
#include "common/util/error.h"

namespace rx::data {
namespace {

namespace fs = std::filesystem;

constexpr uint8_t kUbyte = 0x08;
constexpr int64_t kMaxDim = 1 << 16;  // sanity bound on H/W; counts are bounded by the file size

struct IdxFile {
  std::string path;
  std::vector<uint8_t> bytes;  // decompressed
  std::vector<int64_t> dims;
  int64_t data_offset = 0;
  const uint8_t* data() const { return bytes.data() + data_offset; }
};

std::string hex(uint8_t b) {
  const char* d = "0123456789abcdef";
  return std::string("0x") + d[b >> 4] + d[b & 15];
}

// `path` names where the bytes came from (a file, or a shard the coordinator sent) in every message.
IdxFile parse_idx_file(std::vector<uint8_t> bytes, const std::string& path, int ndims) {
  IdxFile f{path, std::move(bytes), {}, 0};
  const auto& b = f.bytes;
  const int64_t size = static_cast<int64_t>(b.size());
  const std::string want = "00 00 08 " + hex(static_cast<uint8_t>(ndims)).substr(2);
  if (size < 4)
    throw DataError(path, 0,
                    "truncated IDX header: " + std::to_string(size) + " bytes, need 4 for the magic");
  if (b[0] != 0 || b[1] != 0)
    throw DataError(
        path, 0,
        "bad IDX magic " + hex(b[0]) + " " + hex(b[1]) + " (expected " + want + "; not an IDX file)");
  if (b[2] != kUbyte)
    throw DataError(path, 2, "unsupported IDX element type " + hex(b[2]) + " (only 0x08 unsigned byte)");
  if (b[3] != ndims)
    throw DataError(path, 3,
                    "IDX field ndims is " + std::to_string(b[3]) + ", expected " + std::to_string(ndims));
  f.data_offset = 4 + 4 * int64_t{ndims};
  if (size < f.data_offset)
    throw DataError(path, size,
                    "truncated IDX header: " + std::to_string(size) + " bytes, need " +
                        std::to_string(f.data_offset) + " for " + std::to_string(ndims) + " dims");
  // [Dims product] dims[0] may be up to 2^32 - 1 and the others 2^16, so the product can pass 2^63:
  // it is checked against the bytes the file holds before each multiplication, never after.
  const int64_t have = size - f.data_offset;
  int64_t product = 1;
  for (int i = 0; i < ndims; ++i) {
    const uint8_t* p = b.data() + 4 + 4 * i;
    const int64_t dim = int64_t{p[0]} << 24 | int64_t{p[1]} << 16 | int64_t{p[2]} << 8 | p[3];
    const std::string field = "IDX field dims[" + std::to_string(i) + "]";
    if (dim == 0) throw DataError(path, 4 + 4 * i, field + " is 0");  // 4 unsigned bytes: never negative
    if (i > 0 && dim > kMaxDim)
      throw DataError(path, 4 + 4 * i,
                      field + " is " + std::to_string(dim) + ", larger than " + std::to_string(kMaxDim));
    f.dims.push_back(dim);
    if (product > have / dim)
      throw DataError(path, size,
                      "truncated: header dims[0.." + std::to_string(i) + "] declare more than " +
                          std::to_string(have) + " data bytes from offset " + std::to_string(f.data_offset) +
                          " (the file ends at offset " + std::to_string(size) + ")");
    product *= dim;  // <= have, so no overflow
  }
  if (have < product)
    throw DataError(path, size,
                    "truncated: header declares " + std::to_string(product) + " data bytes from offset " +
                        std::to_string(f.data_offset) + ", file has " + std::to_string(have) +
                        " (ends at offset " + std::to_string(size) + ")");
  if (have > product)
    throw DataError(path, f.data_offset + product,
                    std::to_string(have - product) + " trailing bytes after the " + std::to_string(product) +
                        " data bytes the header declares");
  return f;
}

// Prefers name.gz, falls back to the plain name; IoError naming both if neither exists.
std::string find_gz_or_plain(const std::string& dir, const std::string& name) {
  const std::string gz = detail::file_in(dir, name + ".gz"), plain = detail::file_in(dir, name);
  std::error_code ec;
  if (fs::exists(gz, ec)) return gz;
  if (fs::exists(plain, ec)) return plain;
  throw IoError(gz, "file not found (nor " + plain + ")");
}

void put_be32(std::string& out, int64_t v) {
  for (int s = 24; s >= 0; s -= 8) out += static_cast<char>(static_cast<uint8_t>(v >> s));
}

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

Dataset idx_dataset(IdxFile images, IdxFile labels, int num_classes) {
  const std::string& images_path = images.path;
  const std::string& labels_path = labels.path;
  if (images.dims[0] != labels.dims[0])
    throw DataError(labels_path, 4,
                    "IDX field dims[0] (count) is " + std::to_string(labels.dims[0]) + " labels, but " +
                        images_path + " holds " + std::to_string(images.dims[0]) + " images");
  Dataset d;
  d.count = images.dims[0];
  d.channels = 1;
  d.height = static_cast<int>(images.dims[1]);
  d.width = static_cast<int>(images.dims[2]);
  d.num_classes = num_classes;
  d.source = images_path + ", " + labels_path;
  d.labels.resize(static_cast<size_t>(d.count));
  for (int64_t i = 0; i < d.count; ++i) {
    const int label = labels.data()[i];
    if (label >= num_classes)
      throw DataError(labels_path, labels.data_offset + i,
                      "label " + std::to_string(label) + " of sample " + std::to_string(i) +
                          " out of range [0, " + std::to_string(num_classes) + ")");
    d.labels[i] = label;
  }
  // Move the decompressed buffer and drop the header in place: no second full-size allocation.
  images.bytes.erase(images.bytes.begin(), images.bytes.begin() + images.data_offset);
  images.bytes.shrink_to_fit();
  d.pixels = std::move(images.bytes);
  return d;
}

// The pair of files of a split, .gz preferred. Resolved in sequence (not as call arguments) so a
// missing images file is always reported first.
std::pair<std::string, std::string> fashion_mnist_files(const std::string& dir, Split split) {
  const std::string prefix = split == Split::kTrain ? "train" : "t10k";
  std::string images = find_gz_or_plain(dir, prefix + "-images-idx3-ubyte");
  std::string labels = find_gz_or_plain(dir, prefix + "-labels-idx1-ubyte");
  return {std::move(images), std::move(labels)};
}

// A block an encoder can write: consistent buffers, [begin, end) inside them, labels that fit a byte.
void check_encodable(const Dataset& d, int64_t begin, int64_t end, bool single_channel, const char* what) {
  if ((single_channel && d.channels != 1) ||
      static_cast<int64_t>(d.pixels.size()) != d.count * d.sample_bytes() ||
      static_cast<int64_t>(d.labels.size()) != d.count)
    throw DataError(d.source, std::string("cannot encode as ") + what +
                                  (single_channel ? ": must be single-channel with consistent buffers"
                                                  : ": buffers do not match the count"));
  detail::check_block(d, begin, end);
  // The header's count and sizes are 32-bit: a larger value would be written truncated.
  if (end - begin > 0xFFFFFFFFll || d.height > kMaxDim || d.width > kMaxDim)
    throw DataError(d.source, "block of " + std::to_string(end - begin) + " samples of " +
                                  std::to_string(d.height) + "x" + std::to_string(d.width) +
                                  " does not fit an IDX header");
  for (int64_t i = begin; i < end; ++i)
    if (d.labels[i] < 0 || d.labels[i] > 255)
      throw DataError(d.source, "label " + std::to_string(d.labels[i]) + " of sample " + std::to_string(i) +
                                    " does not fit a byte");
}

}  // namespace

Dataset read_idx(const std::string& images_path, const std::string& labels_path, int num_classes) {
  IdxFile images = parse_idx_file(detail::read_file_maybe_gzip(images_path), images_path, 3);
  IdxFile labels = parse_idx_file(detail::read_file_maybe_gzip(labels_path), labels_path, 1);
  return idx_dataset(std::move(images), std::move(labels), num_classes);
}

Dataset decode_idx(const std::string& images, const std::string& labels, const std::string& source,
                   int num_classes) {
  return idx_dataset(parse_idx_file(bytes_of(images), source + " (images)", 3),
                     parse_idx_file(bytes_of(labels), source + " (labels)", 1), num_classes);
}

Dataset read_fashion_mnist(const std::string& dir, Split split) {
  const auto [images, labels] = fashion_mnist_files(dir, split);
  return read_idx(images, labels, 10);
}

int64_t count_fashion_mnist(const std::string& dir, Split split) {
  const std::string images = fashion_mnist_files(dir, split).first;
  // [Trusted count] Only the 16-byte header is read (inflated), but the count it declares sizes the
  // coordinator's shard plan (8 bytes an index), so it is believed only if the file can hold that
  // many images: a plain file's size must be exactly header + count * rows * cols; a gzip file's
  // trailer (ISIZE: the content size mod 2^32) must agree, and the content cannot be more than 1032
  // times the compressed size (deflate's largest ratio). The full read checks every byte later.
  const std::vector<uint8_t> h = detail::read_prefix_maybe_gzip(images, 16);
  if (h.size() >= 4 && (h[0] != 0 || h[1] != 0 || h[2] != kUbyte || h[3] != 3))
    throw DataError(images, 0,
                    "bad IDX magic " + hex(h[0]) + " " + hex(h[1]) + " " + hex(h[2]) + " " + hex(h[3]) +
                        " (expected 0x00 0x00 0x08 0x03: an IDX ubyte image file)");
  if (h.size() < 16)
    throw DataError(images, static_cast<int64_t>(h.size()),
                    "truncated IDX header: " + std::to_string(h.size()) + " bytes, need 16");
  auto be32 = [&](int at) {
    return int64_t{h[at]} << 24 | int64_t{h[at + 1]} << 16 | int64_t{h[at + 2]} << 8 | h[at + 3];
  };
  const int64_t n = be32(4), rows = be32(8), cols = be32(12);
  if (n == 0 || rows == 0 || cols == 0 || rows > kMaxDim || cols > kMaxDim)
    throw DataError(images, 4,
                    "IDX dims " + std::to_string(n) + " x " + std::to_string(rows) + " x " +
                        std::to_string(cols) +
                        " out of range (each >= 1, rows and cols <= " + std::to_string(kMaxDim) + ")");
  const uint64_t content = 16 + static_cast<uint64_t>(n) * static_cast<uint64_t>(rows * cols);  // < 2^64
  std::ifstream f(images, std::ios::binary);
  uint8_t magic[2] = {0, 0}, trailer[4] = {0, 0, 0, 0};
  f.read(reinterpret_cast<char*>(magic), 2);
  f.seekg(0, std::ios::end);
  const auto size = static_cast<uint64_t>(f.tellg());
  const bool gz = magic[0] == 0x1f && magic[1] == 0x8b;
  if (gz && size >= 4) {
    f.seekg(-4, std::ios::end);
    f.read(reinterpret_cast<char*>(trailer), 4);
  }
  if (!f) throw IoError(images, "cannot read its size or gzip trailer");
  const uint64_t isize = uint64_t{trailer[0]} | uint64_t{trailer[1]} << 8 | uint64_t{trailer[2]} << 16 |
                         uint64_t{trailer[3]} << 24;
  const bool fits = gz ? (content - 16) / 1032 <= size && (content & 0xFFFFFFFFu) == isize : content == size;
  if (!fits)
    throw DataError(images, 4,
                    "IDX header declares " + std::to_string(n) + " images of " + std::to_string(rows) + "x" +
                        std::to_string(cols) + " (" + std::to_string(content) + " bytes), but the " +
                        (gz ? "gzip file's trailer says " + std::to_string(isize) + " bytes (mod 2^32) in " +
                                  std::to_string(size) + " compressed"
                            : "file holds " + std::to_string(size)));
  return n;
}

std::string encode_idx_images(const Dataset& d, int64_t begin, int64_t end) {
  check_encodable(d, begin, end, true, "IDX images");
  const int64_t sb = d.sample_bytes();
  std::string out = {0, 0, static_cast<char>(kUbyte), 3};
  out.reserve(static_cast<size_t>(16 + (end - begin) * sb));
  put_be32(out, end - begin);
  put_be32(out, d.height);
  put_be32(out, d.width);
  if (end > begin)
    out.append(reinterpret_cast<const char*>(d.sample(begin)), static_cast<size_t>((end - begin) * sb));
  return out;
}

std::string encode_idx_labels(const Dataset& d, int64_t begin, int64_t end) {
  check_encodable(d, begin, end, true, "IDX labels");
  std::string out = {0, 0, static_cast<char>(kUbyte), 1};
  out.reserve(static_cast<size_t>(8 + end - begin));
  put_be32(out, end - begin);
  for (int64_t i = begin; i < end; ++i) out += static_cast<char>(static_cast<uint8_t>(d.labels[i]));
  return out;
}

void write_idx(const std::string& images_path, const std::string& labels_path, const Dataset& d, bool gzip) {
  const std::string img = encode_idx_images(d, 0, d.count);
  const std::string lab = encode_idx_labels(d, 0, d.count);
  detail::write_file(images_path, reinterpret_cast<const uint8_t*>(img.data()), img.size(), gzip);
  detail::write_file(labels_path, reinterpret_cast<const uint8_t*>(lab.data()), lab.size(), gzip);
}

}  // namespace rx::data
