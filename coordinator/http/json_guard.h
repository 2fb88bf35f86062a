#pragma once
// [Depth guard] nlohmann::json parses recursively, so a body of 100k '[' would exhaust the stack.
// max_json_depth scans brackets outside strings (honouring escapes) in O(n) before any parsing.
#include <string_view>

namespace rx::coord {

constexpr int kMaxJsonDepth = 64;

// The deepest nesting of [ and { in `text`, counting only brackets outside string literals.
int max_json_depth(std::string_view text);

}  // namespace rx::coord
