// Fuzz target: the JSON depth guard (coordinator/http/json_guard.h).
// Property, beyond "no crash": for every input that nlohmann::json accepts (parsed only when the guard
// says the nesting is within the limit, as the router does), the guard's depth is at least the
// nesting depth the parser reads (an under-count would let a deep document reach the recursive
// parser), and equal to it when the text holds no NUL byte (an over-count would refuse valid bodies).
// [NUL ends nlohmann's input] nlohmann::json stops at a NUL byte and accepts "6\0[[[" as 6 (found by
// this target: regressions/json_guard/nul_ends_parse); the guard counts past it, which is the safe
// side, and the router refuses bodies with a NUL (never valid JSON, RFC 8259) before parsing.
#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string_view>

#include "coordinator/http/json_guard.h"
#include "fuzz/fuzz_check.h"

namespace {

// Nesting depth as nlohmann's parser sees it, counting every container it reads, including the
// values of duplicate keys that the DOM would drop ({"a":[[1]],"a":0} has DOM depth 1, text depth 3;
// found by this target: regressions/json_guard/duplicate_key).
struct DepthSax : nlohmann::json_sax<nlohmann::json> {
  int depth = 0, deepest = 0;
  bool open() {
    deepest = std::max(deepest, ++depth);
    return true;
  }
  bool close() {
    --depth;
    return true;
  }
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return open(); }
  bool key(string_t&) override { return true; }
  bool end_object() override { return close(); }
  bool start_array(std::size_t) override { return open(); }
  bool end_array() override { return close(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const int guard = rx::coord::max_json_depth(text);
  FUZZ_CHECK(guard >= 0 && static_cast<size_t>(guard) <= size, "depth %d for %zu bytes", guard, size);
  if (guard > rx::coord::kMaxJsonDepth) return 0;
  DepthSax sax;
  if (!nlohmann::json::sax_parse(text, &sax)) return 0;  // not JSON: the router answers 400
  const int real = sax.deepest;
  FUZZ_CHECK(real <= guard, "guard says depth %d, the parser read depth %d", guard, real);
  if (text.find('\0') == std::string_view::npos)
    FUZZ_CHECK(real == guard, "guard says depth %d, the parser read depth %d", guard, real);
  return 0;
}
