#include "common/config/job_config.h"

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "common/config/schema.h"
#include "common/util/error.h"
#include "common/util/sha256.h"

namespace rx::config {

using json = nlohmann::json;

namespace {

std::string type_name(const json& v) { return v.type_name(); }

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kInt:
      return "an integer";
    case Kind::kNumber:
      return "a number";
    case Kind::kBool:
      return "a boolean";
    case Kind::kString:
      return "a string";
    case Kind::kNumberList:
      return "a list of numbers";
  }
  return "?";
}

constexpr size_t kMaxListLength = 64;

void check_range(const Field& f, double v) {
  if (!std::isfinite(v) || v < f.min || v > f.max) {
    std::ostringstream os;
    os << "value " << v << " is out of range [" << f.min << ", " << f.max << "]";
    throw ConfigError(f.key, os.str());
  }
}

// Type- and range-checks one value against its schema row.
void check_value(const Field& f, const json& v) {
  if (v.is_null()) {
    if (f.nullable) return;
    throw ConfigError(f.key, "must be " + std::string(kind_name(f.kind)) + ", got null");
  }
  auto wrong = [&] {
    throw ConfigError(f.key, "must be " + std::string(kind_name(f.kind)) + ", got " + type_name(v));
  };
  switch (f.kind) {
    case Kind::kInt:
      if (!v.is_number_integer()) wrong();
      check_range(f, v.get<double>());
      break;
    case Kind::kNumber:
      if (!v.is_number()) wrong();
      check_range(f, v.get<double>());
      break;
    case Kind::kBool:
      if (!v.is_boolean()) wrong();
      break;
    case Kind::kString: {
      if (!v.is_string()) wrong();
      if (!f.choices.empty()) {
        const auto& s = v.get_ref<const std::string&>();
        bool ok = false;
        std::string allowed;
        for (const auto& c : f.choices) {
          ok = ok || c == s;
          allowed += (allowed.empty() ? "" : ", ") + c;
        }
        if (!ok) throw ConfigError(f.key, "\"" + s + "\" is not one of: " + allowed);
      }
      break;
    }
    case Kind::kNumberList:
      if (!v.is_array() || v.empty()) wrong();
      // No list in the schema needs more (milestones, per-channel mean/std): a job's config is kept in
      // memory, in the coordinator's store and on disk, so its size stays bounded.
      if (v.size() > kMaxListLength)
        throw ConfigError(f.key, "has " + std::to_string(v.size()) + " values, at most " +
                                     std::to_string(kMaxListLength) + " are allowed");
      for (const auto& x : v) {
        if (!x.is_number()) wrong();
        check_range(f, x.get<double>());
      }
      break;
  }
}

bool is_section(const std::string& prefix) {
  for (const auto& f : schema())
    if (f.key.size() > prefix.size() && f.key.compare(0, prefix.size(), prefix) == 0 &&
        f.key[prefix.size()] == '.')
      return true;
  return false;
}

// Walks the user's document; every leaf must be a schema key, every object a section.
void collect(const json& node, const std::string& prefix, std::vector<std::pair<std::string, json>>& out) {
  for (auto it = node.begin(); it != node.end(); ++it) {
    const std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
    if (find_field(key)) {
      out.emplace_back(key, it.value());
    } else if (is_section(key)) {
      if (!it.value().is_object())
        throw ConfigError(key, "must be an object (a config section), got " + type_name(it.value()));
      collect(it.value(), key, out);
    } else {
      throw ConfigError(key, "unknown key");
    }
  }
}

void set_path(json& root, const std::string& dotted, const json& value) {
  json::json_pointer ptr("/" + [&] {
    std::string p = dotted;
    for (auto& c : p)
      if (c == '.') c = '/';
    return p;
  }());
  root[ptr] = value;
}

const json& get_path(const json& root, const std::string& dotted) {
  std::string p = "/" + dotted;
  for (auto& c : p)
    if (c == '.') c = '/';
  return root.at(json::json_pointer(p));
}

void cross_validate(const json& r) {
  if (get_path(r, "data.format").is_null())
    throw ConfigError("data.format", "is required (cifar10, cifar100, idx, synthetic)");
  if (get_path(r, "data.path").is_null() ||
      (get_path(r, "data.path").get<std::string>().empty() && get_path(r, "data.format") != "synthetic"))
    throw ConfigError("data.path",
                      "is required (only data.format \"synthetic\" may leave it empty: generated in memory)");
  auto ms = get_path(r, "training.lr_schedule.milestones").get<std::vector<double>>();
  for (size_t i = 1; i < ms.size(); ++i)
    if (ms[i] <= ms[i - 1])
      throw ConfigError("training.lr_schedule.milestones", "must be strictly increasing");
  if (get_path(r, "training.optimizer.betas").size() != 2)
    throw ConfigError("training.optimizer.betas", "must have exactly two values");
  if (get_path(r, "training.optimizer.nesterov").get<bool>() &&
      get_path(r, "training.optimizer.momentum").get<double>() <= 0 &&
      get_path(r, "training.optimizer.name").get<std::string>() == "sgd")
    throw ConfigError("training.optimizer.nesterov", "needs training.optimizer.momentum > 0");
  for (const char* key : {"data.augment.erasing_scale", "data.augment.erasing_ratio"}) {
    const auto range = get_path(r, key).get<std::vector<double>>();
    if (range.size() != 2 || range[0] > range[1])
      throw ConfigError(key, "must be [min, max] with min <= max");
  }
  const int rep = get_path(r, "data.augment.replicate_channels").get<int>();
  if (rep != 0 && rep != 1 && rep != 3)
    throw ConfigError("data.augment.replicate_channels", "must be 0, 1 or 3");
  const double hang = get_path(r, "distributed.hang_timeout_s").get<double>();
  if (hang > 0 && hang >= get_path(r, "distributed.timeout_s").get<double>())
    throw ConfigError("distributed.hang_timeout_s",
                      "must be less than distributed.timeout_s (the hang report has to "
                      "come before a collective's plain timeout), or 0 to turn it off");
  model_spec(r);  // throws ConfigError naming model.* keys
}

}  // namespace

Override parse_override(const std::string& kv) {
  const auto eq = kv.find('=');
  if (eq == std::string::npos || eq == 0)
    throw ConfigError("--set", "expected key=value, got \"" + kv + "\"");
  Override o{kv.substr(0, eq), nullptr};
  const std::string value = kv.substr(eq + 1);
  o.value = json::parse(value, nullptr, /*allow_exceptions=*/false);
  if (o.value.is_discarded()) o.value = value;
  return o;
}

json defaults() {
  json r = json::object();
  for (const auto& f : schema()) set_path(r, f.key, f.def);
  return r;
}

json resolve(const json& user, const std::vector<Override>& overrides) {
  if (!user.is_object()) throw ConfigError("config", "must be a JSON object, got " + type_name(user));
  std::vector<std::pair<std::string, json>> values;
  collect(user, "", values);
  for (const auto& o : overrides) {
    if (!find_field(o.key)) throw ConfigError(o.key, "unknown key (in an override)");
    values.emplace_back(o.key, o.value);
  }
  json r = defaults();
  for (const auto& [key, value] : values) {
    check_value(*find_field(key), value);
    set_path(r, key, value);
  }
  cross_validate(r);
  return r;
}

json resolve_file(const std::string& path, const std::vector<Override>& overrides) {
  std::ifstream in(path);
  if (!in) throw IoError(path, "cannot open config file");
  json user = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (user.is_discarded()) throw ConfigError(path, "not valid JSON");
  return resolve(user, overrides);
}

model::ResNeXtSpec model_spec(const json& r) {
  const json& m = r.at("model");
  const bool has_preset = !m.at("preset").is_null();
  const bool has_custom =
      !m.at("depth").is_null() || !m.at("cardinality").is_null() || !m.at("base_width").is_null();
  if (has_preset && has_custom)
    throw ConfigError("model.preset",
                      "give either model.preset or model.depth/cardinality/base_width, not both");
  model::ResNeXtSpec spec;
  if (has_preset) {
    spec = model::preset(m.at("preset").get<std::string>());
  } else {
    for (const char* k : {"depth", "cardinality", "base_width"})
      if (m.at(k).is_null())
        throw ConfigError(std::string("model.") + k, "is required when model.preset is not given");
    spec = model::cifar_spec(m.at("depth").get<int>(), m.at("cardinality").get<int>(),
                             m.at("base_width").get<int>());
  }
  if (!m.at("stem_channels").is_null()) spec.stem_channels = m.at("stem_channels").get<int>();
  if (!m.at("base_planes").is_null()) spec.base_planes = m.at("base_planes").get<int>();
  spec.bottleneck_width = m.at("bottleneck_width").get<int>();
  spec.num_classes = m.at("num_classes").get<int>();
  spec.zero_init_residual = m.at("zero_init_residual").get<bool>();
  spec.fused_bn_relu = m.at("fused_bn_relu").get<bool>();
  // Input channels follow the data: IDX images are grey unless replicated to 3 channels.
  const json& d = r.at("data");
  const int rep = d.at("augment").at("replicate_channels").get<int>();
  const bool grey = d.at("format").is_string() && d.at("format").get<std::string>() == "idx";
  spec.in_channels = rep > 0 ? rep : (grey ? 1 : 3);
  model::validate(spec);
  return spec;
}

std::string config_hash(const json& resolved) { return rx::sha256_hex(resolved.dump()); }

json without_launch_keys(json cfg) {
  if (!cfg.is_object()) return cfg;
  if (cfg.contains("output") && cfg["output"].is_object()) cfg["output"].erase("dir");
  if (cfg.contains("checkpoint") && cfg["checkpoint"].is_object()) cfg["checkpoint"].erase("resume");
  return cfg;
}

}  // namespace rx::config
