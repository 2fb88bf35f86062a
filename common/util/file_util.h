#pragma once
// Whole-file I/O shared by the worker and the coordinator (the dataset readers have their own,
// gzip-aware variant in common/data/file_io.h).
#include <string>

namespace rx {
// The whole file as bytes; IoError naming the path if it cannot be opened or read.
std::string read_file(const std::string& path);

// [Atomic write] Writes to PATH.tmp.<pid>, fsyncs, renames over PATH and fsyncs the folder: a reader
// sees the old file or the new one, never half of one, even if the process dies mid-write.
void write_file_atomic(const std::string& path, const std::string& content);
}  // namespace rx
