#pragma once
// [Error tiers] The project has exactly two kinds of failure, and this file is where they are defined.
//
// 1. Typed exceptions (derived from rx::Error) for what a caller can handle: a bad config or CLI
//    argument (ConfigError, UsageError), a file that cannot be read or written (IoError, DataError),
//    or a failed collective (CommError). Each names what it is about: the config key, the file and
//    offset, or the backend and rank. Binaries catch rx::Error at the top and exit non-zero
//    (2 for usage/config errors) with the message; no stack trace ever reaches a user.
// 2. RX_CHECK for broken invariants inside the program (a bug, not bad input). It throws
//    InternalError with file:line so that tests see it, and the worker's top level turns it into a
//    job-wide abort like any other exception.
//
// Every MPI, NCCL and CUDA call is wrapped in its backend's check macro (RX_MPI_CHECK in
// comm/mpi, RX_NCCL_CHECK / RX_CUDA_CHECK in comm/nccl) which names the call and the rank.
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace rx {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Bad job config or bad CLI value. `field` is the dotted key ("training.epochs") or flag name.
class ConfigError : public Error {
 public:
  ConfigError(std::string field, const std::string& message)
      : Error(field.empty() ? message : field + ": " + message),
        field_(std::move(field)),
        message_(message) {}
  const std::string& field() const { return field_; }
  const std::string& message() const { return message_; }

 private:
  std::string field_;
  std::string message_;
};

// Command-line misuse (unknown flag, missing argument); binaries exit 2.
class UsageError : public Error {
 public:
  using Error::Error;
};

// A file that cannot be opened, read, written or renamed. Names the path.
class IoError : public Error {
 public:
  IoError(const std::string& path, const std::string& message) : Error(path + ": " + message), path_(path) {}
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Content of a data or weights file is wrong (bad magic, truncated, label out of range, bad key).
// Names the file (or the URL or dataset the bytes came from) and, where the fault sits at one byte
// position, its offset: what() is "PATH: offset N: message", or "PATH: message" for the whole file.
class DataError : public Error {
 public:
  static constexpr int64_t kWholeFile = -1;
  DataError(const std::string& path, int64_t offset, const std::string& message)
      : Error(path + (offset >= 0 ? ": offset " + std::to_string(offset) : std::string()) + ": " + message),
        path_(path),
        offset_(offset) {}
  DataError(const std::string& path, const std::string& message) : DataError(path, kWholeFile, message) {}
  const std::string& path() const { return path_; }
  // Byte offset of the fault, or kWholeFile. In a .gz file it counts decompressed bytes, except for a
  // fault in the gzip stream itself ("compressed offset" in the message).
  int64_t offset() const { return offset_; }

 private:
  std::string path_;
  int64_t offset_;
};

// A collective or point-to-point operation failed, timed out, or is not supported by a backend.
class CommError : public Error {
 public:
  CommError(const std::string& backend, int rank, const std::string& message)
      : Error("[" + backend + " rank " + std::to_string(rank) + "] " + message),
        backend_(backend),
        rank_(rank) {}
  const std::string& backend() const { return backend_; }
  int rank() const { return rank_; }

 private:
  std::string backend_;
  int rank_;
};

// A broken invariant (a bug). Thrown only by RX_CHECK.
class InternalError : public Error {
 public:
  using Error::Error;
};

namespace detail {
[[noreturn]] inline void check_failed(const char* expr, const char* file, int line, const std::string& msg) {
  std::ostringstream os;
  os << "internal check failed: " << expr << " at " << file << ":" << line;
  if (!msg.empty()) os << ": " << msg;
  throw InternalError(os.str());
}
}  // namespace detail

}  // namespace rx

// RX_CHECK(cond, streamable...) — invariant check; message parts are streamed only on failure.
#define RX_CHECK(cond, ...)                                                      \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::ostringstream rx_check_os_;                                           \
      rx_check_os_ << "" __VA_OPT__(<<) __VA_ARGS__;                             \
      ::rx::detail::check_failed(#cond, __FILE__, __LINE__, rx_check_os_.str()); \
    }                                                                            \
  } while (0)
