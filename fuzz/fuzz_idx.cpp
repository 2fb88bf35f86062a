// Fuzz target: the IDX reader (common/data/idx.cpp), plain and gzip. Input: 2 bytes (big-endian)
// giving the length of the images file, the images file, then the labels file (what is left); each
// may be gzip-compressed. Properties: read_idx either returns a dataset whose buffers match its
// header, with labels < 10, or throws rx::DataError / rx::IoError naming a file.
#include <cstdint>
#include <string>

#include "common/data/dataset.h"
#include "common/util/error.h"
#include "fuzz/fuzz_check.h"
#include "fuzz/fuzz_reader_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  size_t images_len = size_t{data[0]} << 8 | data[1];
  data += 2;
  size -= 2;
  if (images_len > size) images_len = size;
  MemFile images(data, images_len), labels(data + images_len, size - images_len);
  rx::data::Dataset d;
  try {
    d = rx::data::read_idx(images.path(), labels.path(), 10);
  } catch (const rx::DataError& e) {
    const std::string m = e.what();
    FUZZ_CHECK(m.find("/proc/self/fd/") != std::string::npos, "message names no file: %s", m.c_str());
    return 0;
  } catch (const rx::IoError&) {
    return 0;
  }
  FUZZ_CHECK(d.count >= 1 && d.channels == 1 && d.height >= 1 && d.width >= 1, "bad shape");
  FUZZ_CHECK(static_cast<int64_t>(d.pixels.size()) == d.count * d.sample_bytes(), "pixel buffer size");
  FUZZ_CHECK(static_cast<int64_t>(d.labels.size()) == d.count, "label count");
  for (int32_t l : d.labels) FUZZ_CHECK(l >= 0 && l < 10, "label %d", l);
  return 0;
}
