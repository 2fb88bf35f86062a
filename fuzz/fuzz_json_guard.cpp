// Fuzz target: the JSON depth guard (coordinator/http/json_guard.h).
// Property, beyond "no crash": for every input that nlohmann::json accepts (parsed only when the guard
// says the nesting is within the limit, as the router does), the guard's depth is at least the real
// nesting depth of the parsed document (an under-count would let a deep document reach the recursive
// parser), and equal to it when the text holds no NUL byte (an over-count would refuse valid bodies).
// [NUL ends nlohmann's input] nlohmann::json stops at a NUL byte and accepts "6\0[[[" as 6 (found by
// this target: regressions/json_guard/nul_ends_parse); the guard counts past it, which is the safe
// side, and the router refuses bodies with a NUL (never valid JSON, RFC 8259) before parsing.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string_view>

#include "coordinator/http/json_guard.h"
#include "fuzz/fuzz_check.h"

namespace {

int depth_of(const nlohmann::json& j) {
  if (!j.is_structured()) return 0;
  int deepest = 0;
  for (const auto& child : j) {
    const int d = depth_of(child);
    if (d > deepest) deepest = d;
  }
  return deepest + 1;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const int guard = rx::coord::max_json_depth(text);
  FUZZ_CHECK(guard >= 0 && static_cast<size_t>(guard) <= size, "depth %d for %zu bytes", guard, size);
  if (guard > rx::coord::kMaxJsonDepth) return 0;
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  const int real = depth_of(j);
  FUZZ_CHECK(real <= guard, "guard says depth %d, the parsed document has depth %d", guard, real);
  if (text.find('\0') == std::string_view::npos)
    FUZZ_CHECK(real == guard, "guard says depth %d, the parsed document has depth %d", guard, real);
  return 0;
}
