#pragma once
// [Args] The one flag parser of the project's binaries (worker, coordinator, bench tools): --flag VALUE
// or --flag=VALUE, repeated flags collected in order, boolean switches declared up front, positionals
// kept. Misuse (unknown flag, missing or malformed value, out of range) -> UsageError naming the flag.
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace rx {

class Args {
 public:
  // `valued`: flags that take a value; `switches`: boolean flags. Anything else -> UsageError.
  Args(const std::vector<std::string>& argv, const std::set<std::string>& valued,
       const std::set<std::string>& switches);
  std::optional<std::string> get(const std::string& flag) const;  // last occurrence
  std::string get_or(const std::string& flag, const std::string& def) const;
  std::vector<std::string> all(const std::string& flag) const;
  bool has(const std::string& flag) const;
  // The flag's whole-number value in [lo, hi], or def when the flag is absent.
  int get_int(const std::string& flag, int def, int lo, int hi) const;
  int64_t get_int64(const std::string& flag, int64_t def, int64_t lo, int64_t hi) const;
  const std::vector<std::string>& positionals() const { return positionals_; }

 private:
  std::map<std::string, std::vector<std::string>> values_;
  std::set<std::string> switches_set_;
  std::vector<std::string> positionals_;
};

}  // namespace rx
