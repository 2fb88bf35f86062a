#include "coordinator/jobs/tokens.h"

#include <fstream>

#include "common/util/error.h"
#include "coordinator/util/util.h"

namespace rx::coord {

Tokens Tokens::from_pairs(const std::vector<std::pair<std::string, std::string>>& name_token) {
  Tokens t;
  t.enabled_ = true;
  for (const auto& [name, token] : name_token) t.entries_.emplace_back(name, sha256_hex(token));
  return t;
}

Tokens Tokens::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw IoError(path, "cannot read token file");
  std::vector<std::pair<std::string, std::string>> pairs;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    auto colon = line.find(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == line.size())
      throw ConfigError("token-file", path + ":" + std::to_string(n) + ": expected name:token");
    pairs.emplace_back(line.substr(0, colon), line.substr(colon + 1));
  }
  if (pairs.empty()) throw ConfigError("token-file", path + ": no tokens");
  return from_pairs(pairs);
}

std::optional<std::string> Tokens::authenticate(std::string_view authorization) const {
  if (!enabled_) return std::string("anonymous");
  const std::string_view prefix = "Bearer ";
  if (authorization.substr(0, prefix.size()) != prefix) return std::nullopt;
  const std::string digest = sha256_hex(std::string(authorization.substr(prefix.size())));
  std::optional<std::string> who;
  for (const auto& [name, d] : entries_)  // no early exit
    if (ct_equal(digest, d) && !who) who = name;
  return who;
}

}  // namespace rx::coord
