#include "coordinator/jobs/tokens.h"

#include <cctype>
#include <fstream>

#include "common/util/error.h"
#include "coordinator/util/util.h"

namespace rx::coord {

void Tokens::add(const std::string& name, const std::string& token, bool admin) {
  enabled_ = true;
  entries_.push_back({name, sha256_hex(token), admin});
}

Tokens Tokens::from_pairs(const std::vector<std::pair<std::string, std::string>>& name_token) {
  Tokens t;
  t.enabled_ = true;
  for (const auto& [name, token] : name_token) t.add(name, token, false);
  return t;
}

Tokens Tokens::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw IoError(path, "cannot read token file");
  Tokens t;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    const std::string where = path + ":" + std::to_string(n) + ": ";
    bool admin = false;
    // Bearer tokens (RFC 6750 token68) hold no spaces, so a space can only start the role.
    if (auto sp = line.find(' '); sp != std::string::npos) {
      const std::string role = line.substr(sp + 1);
      if (role != "admin" && role != "user")
        throw ConfigError("token-file", where + "role must be 'user' or 'admin', got '" + role + "'");
      admin = role == "admin";
      line.resize(sp);
    }
    auto colon = line.find(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == line.size())
      throw ConfigError("token-file", where + "expected name:token[ role]");
    t.add(line.substr(0, colon), line.substr(colon + 1), admin);
  }
  if (!t.enabled_) throw ConfigError("token-file", path + ": no tokens");
  return t;
}

std::optional<Principal> Tokens::identify(std::string_view authorization) const {
  if (!enabled_) return Principal{"anonymous", true};
  // RFC 7235 2.1: the auth-scheme is case-insensitive.
  constexpr std::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size()) return std::nullopt;
  for (size_t i = 0; i < kScheme.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != kScheme[i]) return std::nullopt;
  const std::string digest = sha256_hex(std::string(authorization.substr(kScheme.size())));
  std::optional<Principal> who;
  for (const auto& e : entries_)  // no early exit
    if (ct_equal(digest, e.digest) && !who) who = Principal{e.name, e.admin};
  return who;
}

std::optional<std::string> Tokens::authenticate(std::string_view authorization) const {
  auto p = identify(authorization);
  if (!p) return std::nullopt;
  return p->name;
}

}  // namespace rx::coord
