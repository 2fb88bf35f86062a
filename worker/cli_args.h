#pragma once
// A deliberately small flag parser for the worker's few flags: `--name value`, `--name=value`,
// boolean `--flag`, and repeatable flags (`--set k=v --set k2=v2`). Misuse throws rx::UsageError.
#include <map>
#include <set>
#include <string>
#include <vector>

namespace rx::worker {

class CliArgs {
 public:
  // value_flags take a value; bool_flags do not. Anything else starting with "--" is an error.
  CliArgs(const std::vector<std::string>& args, const std::set<std::string>& value_flags,
          const std::set<std::string>& bool_flags);
  bool has(const std::string& flag) const { return values_.count(flag) > 0; }
  std::string get(const std::string& flag, const std::string& fallback = "") const;
  const std::vector<std::string>& all(const std::string& flag) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positional_;
};

}  // namespace rx::worker
