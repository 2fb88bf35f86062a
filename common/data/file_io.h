#pragma once
// Whole-file reads and writes for the dataset readers (internal to common/data).
#include <cstdint>
#include <string>
#include <vector>

namespace rx::data {
struct Dataset;
}

namespace rx::data::detail {

// Reads the whole file into `out` (reusing its capacity). IoError if missing, not a regular file or
// unreadable.
void read_file(const std::string& path, std::vector<uint8_t>& out);
// Like read_file, but inflates gzip content (detected by the magic 1f 8b). A corrupt or truncated
// gzip stream -> DataError naming the file and the compressed offset.
std::vector<uint8_t> read_file_maybe_gzip(const std::string& path);
// The first `n` bytes of the file's content (inflated when gzip): fewer if the content is shorter.
// IoError if missing or unreadable; DataError for a corrupt gzip stream.
std::vector<uint8_t> read_prefix_maybe_gzip(const std::string& path, size_t n);
// The block [begin, end) an encoder is asked for lies inside d: DataError naming d.source otherwise.
void check_block(const Dataset& d, int64_t begin, int64_t end);
// Writes `n` bytes (gzip-compressed when `gzip`), creating parent directories. IoError on failure.
void write_file(const std::string& path, const uint8_t* data, size_t n, bool gzip = false);
// dir/name, as the readers name a dataset's files.
std::string file_in(const std::string& dir, const std::string& name);

}  // namespace rx::data::detail
