#include "worker/cli_args.h"

#include "common/util/error.h"

namespace rx::worker {

CliArgs::CliArgs(const std::vector<std::string>& args, const std::set<std::string>& value_flags,
                 const std::set<std::string>& bool_flags) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0) {
      positional_.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    const auto eq = name.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (bool_flags.count(name)) {
      if (inline_value) throw UsageError("--" + name + " takes no value");
      values_[name].push_back("true");
    } else if (value_flags.count(name)) {
      if (!inline_value) {
        if (i + 1 >= args.size()) throw UsageError("--" + name + " needs a value");
        value = args[++i];
      }
      values_[name].push_back(value);
    } else {
      throw UsageError("unknown flag --" + name);
    }
  }
}

std::string CliArgs::get(const std::string& flag, const std::string& fallback) const {
  auto it = values_.find(flag);
  return it == values_.end() ? fallback : it->second.back();
}

const std::vector<std::string>& CliArgs::all(const std::string& flag) const {
  static const std::vector<std::string> none;
  auto it = values_.find(flag);
  return it == values_.end() ? none : it->second;
}

}  // namespace rx::worker
