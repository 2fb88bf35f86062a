#include "coordinator/jobs/path_policy.h"

#include <filesystem>

#include "coordinator/jobs/api_error.h"

namespace rx::coord {

namespace fs = std::filesystem;
using nlohmann::json;

std::string PathPolicy::canonical_root(const std::string& root) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::absolute(root, ec), ec);
  return ec ? std::string() : p.lexically_normal().string();
}

bool PathPolicy::under(const std::string& path, const std::string& root) {
  if (path.empty() || root.empty()) return false;
  std::error_code ec;
  // weakly_canonical resolves every symlink in the part that exists, so a link inside a root that
  // points outside it is judged by its target.
  const fs::path p = fs::weakly_canonical(fs::absolute(path, ec), ec).lexically_normal();
  if (ec) return false;
  const fs::path r = fs::path(canonical_root(root));
  auto pi = p.begin();
  for (auto ri = r.begin(); ri != r.end(); ++ri, ++pi) {
    if (ri->empty()) continue;  // a trailing separator
    if (pi == p.end() || *pi != *ri) return false;
  }
  return true;
}

namespace {

void check_strings(const json& j, const std::string& where, size_t max) {
  if (j.is_string() && j.get_ref<const std::string&>().size() > max)
    throw ApiError(413, "field_too_large", "string longer than " + std::to_string(max) + " bytes", where);
  if (j.is_object())
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key().size() > max) throw ApiError(413, "field_too_large", "key too long", where);
      check_strings(it.value(), where.empty() ? it.key() : where + "." + it.key(), max);
    }
  if (j.is_array())
    for (size_t i = 0; i < j.size(); ++i) check_strings(j[i], where + "[" + std::to_string(i) + "]", max);
}

void confine(const std::string& p, const char* field, const std::vector<std::string>& roots,
             const char* flag) {
  if (p.empty()) return;  // synthetic data / no pretrained weights
  for (const auto& r : roots)
    if (PathPolicy::under(p, r)) return;
  std::string allowed;
  for (const auto& r : roots) allowed += (allowed.empty() ? "" : ", ") + r;
  throw ApiError(400, "path_not_allowed",
                 "must resolve under " + (allowed.empty() ? std::string("a configured root") : allowed) +
                     " (serve " + flag + ")",
                 field);
}

}  // namespace

void PathPolicy::check(const json& cfg, const config::JobSpec& spec) const {
  check_strings(cfg, "", max_string_bytes);
  confine(spec.data.path, "data.path", data_roots, "--data-root");
  confine(spec.model.pretrained, "model.pretrained", weights_roots, "--weights-root");
}

}  // namespace rx::coord
