// Fuzz target: the CIFAR-10/100 record reader (common/data/cifar.cpp), which also reads the shards the
// coordinator ships. Input: 1 byte choosing CIFAR-10 (even) or CIFAR-100 (odd), then the file.
// Properties: read_cifar_records either returns records whose buffers and labels are consistent, or
// throws rx::DataError / rx::IoError naming the file.
#include <cstdint>
#include <string>

#include "common/data/dataset.h"
#include "common/util/error.h"
#include "fuzz/fuzz_check.h"
#include "fuzz/fuzz_reader_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool cifar100 = data[0] & 1;
  MemFile file(data + 1, size - 1);
  rx::data::Dataset d;
  try {
    d = rx::data::read_cifar_records(file.path(), cifar100);
  } catch (const rx::DataError& e) {
    const std::string m = e.what();
    FUZZ_CHECK(m.find("/proc/self/fd/") != std::string::npos, "message names no file: %s", m.c_str());
    return 0;
  } catch (const rx::IoError&) {
    return 0;
  }
  const int classes = cifar100 ? 100 : 10;
  FUZZ_CHECK(d.count >= 1 && d.channels == 3 && d.height == 32 && d.width == 32, "bad shape");
  FUZZ_CHECK(static_cast<int64_t>(d.pixels.size()) == d.count * d.sample_bytes(), "pixel buffer size");
  FUZZ_CHECK(static_cast<int64_t>(d.labels.size()) == d.count, "label count");
  for (int32_t l : d.labels) FUZZ_CHECK(l >= 0 && l < classes, "label %d", l);
  return 0;
}
