#pragma once
// [Tokens] User tokens from --token-file (`name:token` per line; '#' comments). Only SHA-256 digests
// are kept; a presented token is hashed and compared against every digest with CRYPTO_memcmp, so the
// time taken does not depend on where the first differing byte is, nor on which entry matches.
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rx::coord {

class Tokens {
 public:
  Tokens() = default;                     // auth disabled: everyone is "anonymous"
  static Tokens load(const std::string& path);  // IoError / ConfigError("token-file")
  static Tokens from_pairs(const std::vector<std::pair<std::string, std::string>>& name_token);
  bool enabled() const { return enabled_; }
  // The owner for an Authorization header value ("Bearer <token>"), or nullopt.
  std::optional<std::string> authenticate(std::string_view authorization) const;

 private:
  bool enabled_ = false;
  std::vector<std::pair<std::string, std::string>> entries_;  // name, sha256 hex of token
};

}  // namespace rx::coord
