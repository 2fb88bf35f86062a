// Fuzz target: the job-config resolver (common/config), the gate every submission goes through.
// Input: JSON text, either a config object or [config, {"dotted.key": value, ...}] (overrides), parsed
// behind the same depth guard the coordinator uses. Properties: resolve() either returns or throws
// rx::ConfigError (anything else, e.g. nlohmann's type_error, would be a 500 or a crash upstream);
// a resolved config resolves to itself (it carries every default, so it is a fixed point) and
// model_spec() accepts it.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string_view>
#include <vector>

#include "common/config/job_config.h"
#include "common/util/error.h"
#include "coordinator/http/json_guard.h"
#include "fuzz/fuzz_check.h"

using nlohmann::json;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (rx::coord::max_json_depth(text) > rx::coord::kMaxJsonDepth) return 0;
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return 0;
  json config = doc;
  std::vector<rx::config::Override> overrides;
  if (doc.is_array() && doc.size() == 2 && doc[1].is_object()) {
    config = doc[0];
    for (auto it = doc[1].begin(); it != doc[1].end(); ++it) overrides.push_back({it.key(), it.value()});
  }
  json resolved;
  try {
    resolved = rx::config::resolve(config, overrides);
  } catch (const rx::ConfigError& e) {
    FUZZ_CHECK(!e.message().empty(), "a ConfigError without a message (field '%s')", e.field().c_str());
    return 0;
  }
  json again;
  try {
    again = rx::config::resolve(resolved);
    rx::config::model_spec(again);
  } catch (const rx::ConfigError& e) {
    FUZZ_CHECK(false, "a resolved config is refused when resolved again: %s", e.what());
  }
  FUZZ_CHECK(again == resolved, "resolve is not idempotent: %s vs %s", again.dump().c_str(),
             resolved.dump().c_str());
  FUZZ_CHECK(rx::config::config_hash(again) == rx::config::config_hash(resolved), "hash differs");
  return 0;
}
