#pragma once
#include <string>

namespace rx {
// [Atomic write] Writes to PATH.tmp.<pid>, fsyncs, renames over PATH and fsyncs the folder: a reader
// sees the old file or the new one, never half of one, even if the process dies mid-write.
void write_file_atomic(const std::string& path, const std::string& content);
}  // namespace rx
