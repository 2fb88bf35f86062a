#pragma once
// The job config: one JSON document with the sections model, data, training, distributed, output.
// [Config contract] resolve() is the single gate every entry point goes through (worker CLI,
// coordinator submissions, tests): unknown keys, wrong types and out-of-range values are rejected with
// a ConfigError whose field() is the dotted key, and the result carries every default explicitly, so
// the resolved document alone reproduces a run (it is what result.json records and hashes).
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/model/resnext_spec.h"

namespace rx::config {

struct Override {
  std::string key;  // dotted, e.g. "training.epochs"
  nlohmann::json value;
};

// "a.b=3" -> {"a.b", 3}. The value is parsed as JSON when it is valid JSON, else taken as a string.
Override parse_override(const std::string& key_equals_value);

nlohmann::json resolve(const nlohmann::json& user_config, const std::vector<Override>& overrides = {});

// Reads and resolves a config file; IoError if unreadable, ConfigError (field "<file>") if not JSON.
nlohmann::json resolve_file(const std::string& path, const std::vector<Override>& overrides = {});

// The model spec described by a resolved config (preset or depth/cardinality/base_width).
model::ResNeXtSpec model_spec(const nlohmann::json& resolved);

// Documented defaults as a resolved-style JSON tree (for `resnext_worker config --defaults`).
nlohmann::json defaults();

// SHA-256 of the canonical (sorted-key, compact) dump of a resolved config.
std::string config_hash(const nlohmann::json& resolved);

// A resolved config minus the keys a launch sets on the worker's command line (output.dir from --out,
// checkpoint.resume from --resume): what a job's config and the record of one of its runs share.
// Any JSON is accepted (a record is read from disk); what is not an object is returned unchanged.
nlohmann::json without_launch_keys(nlohmann::json resolved);

}  // namespace rx::config
