#include "common/util/args.h"

#include <charconv>

#include "common/util/error.h"

namespace rx {

Args::Args(const std::vector<std::string>& argv, const std::set<std::string>& valued,
           const std::set<std::string>& switches) {
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a.rfind("--", 0) != 0 || a == "--") {
      positionals_.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    bool inline_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    if (switches.count(name)) {
      if (inline_value) throw UsageError("--" + name + " takes no value");
      switches_set_.insert(name);
    } else if (valued.count(name)) {
      if (!inline_value) {
        if (i + 1 >= argv.size()) throw UsageError("--" + name + " needs a value");
        value = argv[++i];
      }
      values_[name].push_back(value);
    } else {
      throw UsageError("unknown flag --" + name);
    }
  }
}

std::optional<std::string> Args::get(const std::string& flag) const {
  auto it = values_.find(flag);
  if (it == values_.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

std::string Args::get_or(const std::string& flag, const std::string& def) const {
  return get(flag).value_or(def);
}

std::vector<std::string> Args::all(const std::string& flag) const {
  auto it = values_.find(flag);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

bool Args::has(const std::string& flag) const {
  return switches_set_.count(flag) > 0 || values_.count(flag) > 0;
}

int Args::get_int(const std::string& flag, int def, int lo, int hi) const {
  return static_cast<int>(get_int64(flag, def, lo, hi));
}

int64_t Args::get_int64(const std::string& flag, int64_t def, int64_t lo, int64_t hi) const {
  auto v = get(flag);
  if (!v) return def;
  int64_t out = 0;
  auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), out);
  if (ec != std::errc() || p != v->data() + v->size() || v->empty())
    throw UsageError("--" + flag + " must be an integer, got '" + *v + "'");
  if (out < lo || out > hi)
    throw UsageError("--" + flag + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return out;
}

}  // namespace rx
