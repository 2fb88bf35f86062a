#pragma once
// [Fuzz inputs as files] The dataset readers take paths, so a fuzz input is handed over as an
// anonymous in-memory file (memfd) named by /proc/self/fd/N: no disk writes per execution, nothing to
// clean up if the process dies, and the readers' real open/stat/read paths are exercised.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

class MemFile {
 public:
  MemFile(const uint8_t* data, size_t size) : fd_(memfd_create("rx_fuzz", MFD_CLOEXEC)) {
    if (fd_ < 0) std::abort();
    size_t done = 0;
    while (done < size) {
      const ssize_t n = write(fd_, data + done, size - done);
      if (n <= 0) std::abort();
      done += static_cast<size_t>(n);
    }
  }
  ~MemFile() { close(fd_); }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;
  std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }

 private:
  int fd_;
};
