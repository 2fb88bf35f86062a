#pragma once
// The table of every config key: its type, default and allowed range. Adding a key means adding one
// row here; resolve() and the docs derive from it.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace rx::config {

enum class Kind { kInt, kNumber, kBool, kString, kNumberList };

struct Field {
  std::string key;  // dotted path
  Kind kind;
  nlohmann::json def;  // default; null = "unset" (allowed only when nullable)
  double min = -1e300;
  double max = 1e300;
  std::vector<std::string> choices = {};  // for kString: allowed values (empty = any)
  bool nullable = false;
  std::string help = "";
};

const std::vector<Field>& schema();
const Field* find_field(const std::string& key);

}  // namespace rx::config
