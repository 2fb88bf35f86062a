#include "coordinator/util/util.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <chrono>
#include <ctime>

#include "common/report/report_client.h"
#include "common/util/error.h"
#include "common/util/sha256.h"

namespace rx::coord {

int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

std::string iso8601(int64_t unix_ms) {
  std::time_t secs = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof out, "%s.%03dZ", buf, static_cast<int>(unix_ms % 1000));
  return out;
}

std::string random_hex(int bytes) {
  std::string raw(static_cast<size_t>(bytes), '\0');
  RX_CHECK(RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), bytes) == 1, "RAND_bytes failed");
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out;
}

bool ct_equal(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace rx::coord
