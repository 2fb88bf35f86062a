#include "common/data/file_io.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "common/data/dataset.h"
#include "common/util/error.h"

namespace rx::data::detail {
namespace {

namespace fs = std::filesystem;

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

std::string errno_text() { return std::strerror(errno); }

bool is_gzip(const std::vector<uint8_t>& b) { return b.size() >= 2 && b[0] == 0x1f && b[1] == 0x8b; }

std::vector<uint8_t> inflate_gzip(const std::string& path, const std::vector<uint8_t>& in) {
  // ISIZE (last 4 bytes, little-endian) is the uncompressed size mod 2^32: a good first guess.
  size_t guess = in.size() * 4;
  if (in.size() >= 18) {
    const uint8_t* t = in.data() + in.size() - 4;
    guess = uint32_t{t[0]} | uint32_t{t[1]} << 8 | uint32_t{t[2]} << 16 | uint32_t{t[3]} << 24;
  }
  // A corrupt trailer must not trigger a huge allocation: deflate expands at most ~1032:1.
  guess = std::clamp<size_t>(guess, 1, std::min<size_t>(in.size() * 1032 + 64, size_t{1} << 30));
  std::vector<uint8_t> out(guess);
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 16) != Z_OK) throw IoError(path, "zlib inflateInit2 failed");
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  int rc = Z_OK;
  while (true) {
    if (zs.total_out == out.size()) out.resize(out.size() * 2);
    zs.next_out = out.data() + zs.total_out;
    zs.avail_out = static_cast<uInt>(out.size() - zs.total_out);
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc == Z_STREAM_END) break;
    if (rc == Z_OK) continue;
    if (rc == Z_BUF_ERROR && zs.avail_out == 0) continue;  // needs more room
    const size_t at = zs.total_in;
    const std::string what = rc == Z_BUF_ERROR ? "truncated gzip stream (unexpected end of input)"
                                               : std::string("corrupt gzip stream: ") +
                                                     (zs.msg ? zs.msg : "zlib error " + std::to_string(rc));
    inflateEnd(&zs);
    throw DataError(path, static_cast<int64_t>(at), what + " (compressed offset)");
  }
  out.resize(zs.total_out);
  inflateEnd(&zs);
  return out;
}

}  // namespace

void read_file(const std::string& path, std::vector<uint8_t>& out) {
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (!fs::exists(status)) throw IoError(path, "file not found");
  if (!fs::is_regular_file(status)) throw IoError(path, "not a regular file");
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) throw IoError(path, "cannot open: " + errno_text());
  const auto size = fs::file_size(path, ec);
  if (ec) throw IoError(path, "cannot stat: " + ec.message());
  out.resize(size);
  if (size > 0 && std::fread(out.data(), 1, size, f.get()) != size)
    throw IoError(path, "read failed: " + errno_text());
}

std::vector<uint8_t> read_file_maybe_gzip(const std::string& path) {
  std::vector<uint8_t> raw;
  read_file(path, raw);
  return is_gzip(raw) ? inflate_gzip(path, raw) : raw;
}

void check_block(const Dataset& d, int64_t begin, int64_t end) {
  if (begin < 0 || begin > end || end > d.count)
    throw DataError(d.source, "block [" + std::to_string(begin) + ", " + std::to_string(end) +
                                  ") is outside the " + std::to_string(d.count) + " samples");
}

std::vector<uint8_t> read_prefix_maybe_gzip(const std::string& path, size_t n) {
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (!fs::exists(status)) throw IoError(path, "file not found");
  if (!fs::is_regular_file(status)) throw IoError(path, "not a regular file");
  // gzread passes a file without the gzip magic through unchanged, so one path reads both kinds.
  gzFile g = gzopen(path.c_str(), "rb");
  if (!g) throw IoError(path, "cannot open: " + errno_text());
  std::vector<uint8_t> out(n);
  const int got = n > 0 ? gzread(g, out.data(), static_cast<unsigned>(n)) : 0;
  int zerr = Z_OK;
  const std::string what = got < 0 ? gzerror(g, &zerr) : "";
  gzclose(g);
  if (got < 0) throw DataError(path, 0, "corrupt gzip stream: " + what);
  out.resize(static_cast<size_t>(got));
  return out;
}

void write_file(const std::string& path, const uint8_t* data, size_t n, bool gzip) {
  const fs::path p(path);
  std::error_code ec;
  if (p.has_parent_path()) fs::create_directories(p.parent_path(), ec);
  if (ec) throw IoError(p.parent_path().string(), "cannot create directory: " + ec.message());
  if (gzip) {
    gzFile g = gzopen(path.c_str(), "wb");
    if (!g) throw IoError(path, "cannot open for writing: " + errno_text());
    size_t done = 0;
    while (done < n) {
      const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - done, 1u << 30));
      if (gzwrite(g, data + done, chunk) != static_cast<int>(chunk)) {
        gzclose(g);
        throw IoError(path, "gzip write failed");
      }
      done += chunk;
    }
    if (gzclose(g) != Z_OK) throw IoError(path, "gzip close failed");
    return;
  }
  File f(std::fopen(path.c_str(), "wb"));
  if (!f) throw IoError(path, "cannot open for writing: " + errno_text());
  if (n > 0 && std::fwrite(data, 1, n, f.get()) != n) throw IoError(path, "write failed: " + errno_text());
  if (std::fclose(f.release()) != 0) throw IoError(path, "close failed: " + errno_text());
}

std::string file_in(const std::string& dir, const std::string& name) {
  return (std::filesystem::path(dir) / name).string();
}

}  // namespace rx::data::detail
