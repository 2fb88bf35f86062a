#pragma once
// [Tokens] User tokens from --token-file: one `name:token[ role]` a line ('#' comments), role `user`
// (the default: sees and cancels its own jobs) or `admin` (sees and cancels every job). Only SHA-256
// digests are kept; a presented token is hashed and compared against every digest with CRYPTO_memcmp,
// so the time taken depends neither on where the first differing byte is nor on which entry matches.
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rx::coord {

// Who made a request. With auth disabled everyone is {"anonymous", admin}: the single-user demo.
struct Principal {
  std::string name;
  bool admin = false;
};

class Tokens {
 public:
  Tokens() = default;                           // auth disabled: everyone is "anonymous"
  static Tokens load(const std::string& path);  // IoError / ConfigError("token-file")
  static Tokens from_pairs(const std::vector<std::pair<std::string, std::string>>& name_token);
  void add(const std::string& name, const std::string& token, bool admin);
  bool enabled() const { return enabled_; }
  // The caller for an Authorization header value ("Bearer <token>", scheme case-insensitive), or nullopt.
  std::optional<Principal> identify(std::string_view authorization) const;
  std::optional<std::string> authenticate(std::string_view authorization) const;  // identify()->name

 private:
  struct Entry {
    std::string name, digest;  // digest: sha256 hex of the token
    bool admin = false;
  };
  bool enabled_ = false;
  std::vector<Entry> entries_;
};

}  // namespace rx::coord
