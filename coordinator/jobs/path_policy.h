#pragma once
// [Path policy] Where paths inside a job config may point. A job's worker opens data.path and
// model.pretrained with the coordinator's own rights, and its log (readable by the owner) says whether
// they exist; so a path is accepted only if it resolves, after every symlink, to a place under one of
// the configured roots (serve --data-root / --weights-root). Also bounds every string in a config.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/config/job_spec.h"

namespace rx::coord {

struct PathPolicy {
  std::vector<std::string> data_roots;     // data.path must resolve under one of these
  std::vector<std::string> weights_roots;  // model.pretrained (when set) must resolve under one of these
  size_t max_string_bytes = 4096;          // any string value in a resolved config

  // Canonical form of `root` (created roots need not exist yet: weakly_canonical).
  static std::string canonical_root(const std::string& root);
  // true when `path` resolves (following symlinks) to `root` itself or something below it.
  static bool under(const std::string& path, const std::string& root);
  // Throws ApiError 400 naming the field ("data.path", "model.pretrained") or 413 for an over-long string.
  // `resolved_config` is the document `spec` was read from (its strings are bounded).
  void check(const nlohmann::json& resolved_config, const config::JobSpec& spec) const;
};

}  // namespace rx::coord
