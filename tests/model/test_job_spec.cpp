// The typed JobSpec (common/config/job_spec.h): built from the resolved config, it must give back the
// same document byte for byte (so the run record's config_sha256 does not change), and a bad config
// must still be a ConfigError naming the dotted key.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "common/config/job_spec.h"
#include "common/util/error.h"

using nlohmann::json;
using namespace rx::config;

namespace {

json base() {
  return json::parse(R"({"model": {"preset": "resnext20_tiny"},
                         "data": {"format": "idx", "path": "/usr/share/datasets/fashion-mnist"}})");
}

std::string field_of(const json& cfg, const std::vector<Override>& o = {}) {
  try {
    from_json(cfg, o);
  } catch (const rx::ConfigError& e) {
    return e.field();
  }
  return "<accepted>";
}

std::vector<std::string> shipped_configs() {
  const char* src = std::getenv("RX_SOURCE_DIR");
  if (!src) return {};
  std::vector<std::string> out;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(src) + "/configs"))
    if (entry.is_regular_file() && entry.path().extension() == ".json") out.push_back(entry.path().string());
  return out;
}

}  // namespace

// [Number spelling] For every shipped config the spec serialises to resolve()'s document exactly:
// same dump, same SHA-256 (what result.json and the checkpoints record).
TEST(JobSpec, ShippedConfigsRoundTripToTheSameHash) {
  ASSERT_NE(std::getenv("RX_SOURCE_DIR"), nullptr) << "RX_SOURCE_DIR is set by CTest";
  const auto configs = shipped_configs();
  ASSERT_FALSE(configs.empty()) << "no configs/*.json";
  for (const auto& path : configs) {
    const json resolved = resolve_file(path);
    const JobSpec spec = from_file(path);
    EXPECT_EQ(to_json(spec).dump(), resolved.dump()) << path;
    EXPECT_EQ(config_hash(spec), config_hash(resolved)) << path;
    EXPECT_EQ(to_json(from_json(to_json(spec))).dump(), resolved.dump()) << path << ": not a fixed point";
  }
  std::cout << configs.size() << " configs checked\n";
}

// Integers in number fields stay integers and decimals stay decimals (300 vs 300.0 hash apart).
TEST(JobSpec, NumberSpellingIsKept) {
  auto cfg = base();
  cfg["training"]["optimizer"]["lr"] = 1;
  cfg["training"]["optimizer"]["momentum"] = 0.5;
  cfg["distributed"]["timeout_s"] = 600.0;
  cfg["distributed"]["bucket_mb"] = 4;
  cfg["data"]["augment"]["std"] = json{1, 0.5, 2.0};
  cfg["training"]["lr_schedule"]["warmup_epochs"] = 2;
  const json resolved = resolve(cfg);
  const JobSpec spec = from_json(cfg);
  EXPECT_EQ(to_json(spec).dump(), resolved.dump());
  EXPECT_NE(to_json(spec).dump().find("\"timeout_s\":600.0"), std::string::npos) << to_json(spec).dump();
  EXPECT_NE(to_json(spec).dump().find("\"std\":[1,0.5,2.0]"), std::string::npos) << to_json(spec).dump();
  EXPECT_EQ(config_hash(spec), config_hash(resolved));
  // Changing a field through the struct shows up in the document and the hash.
  JobSpec changed = spec;
  changed.distributed.bucket_mb = 4.5;
  EXPECT_EQ(to_json(changed)["distributed"]["bucket_mb"], 4.5);
  EXPECT_NE(config_hash(changed), config_hash(spec));
}

TEST(JobSpec, FieldsAreTyped) {
  const JobSpec s = from_json(
      base(), {parse_override("training.seed=7"), parse_override("checkpoint.resume=auto"),
               parse_override("training.optimizer.name=adamw"), parse_override("data.source=coordinator")});
  EXPECT_EQ(s.training.seed, 7u);
  EXPECT_EQ(s.training.batch_size, 64);
  EXPECT_EQ(s.checkpoint.resume, ResumeMode::kAuto);
  EXPECT_EQ(s.training.optimizer.name, OptimizerKind::kAdamW);
  EXPECT_EQ(s.training.lr_schedule.name, LrScheduleKind::kMultistep);
  EXPECT_EQ(s.data.source, DataSource::kCoordinator);
  EXPECT_EQ(s.data.format, "idx");
  EXPECT_EQ(s.training.device, DeviceChoice::kAuto);
  EXPECT_EQ(s.model.preset.value_or(""), "resnext20_tiny");
  EXPECT_FALSE(s.model.depth.has_value());
  EXPECT_EQ(s.training.optimizer.betas[1], 0.999);
  EXPECT_EQ(s.distributed.timeout().count(), 300000);
  EXPECT_EQ(model_spec(s).in_channels, 1);  // idx data is grey
  EXPECT_EQ(model_json(s), resolve(base())["model"]);
}

TEST(JobSpec, BadConfigNamesTheDottedKey) {
  auto with = [](const std::string& ptr, json v) {
    auto c = base();
    c[json::json_pointer(ptr)] = v;
    return c;
  };
  EXPECT_EQ(field_of(with("/training/batch_size", "64")), "training.batch_size");  // wrong type
  EXPECT_EQ(field_of(with("/training/seed", -1)), "training.seed");                // out of range
  EXPECT_EQ(field_of(with("/training/optimizer/betas", json{0.9})), "training.optimizer.betas");
  EXPECT_EQ(field_of(with("/training/optimiser", json::object())), "training.optimiser");  // unknown key
  EXPECT_EQ(field_of(with("/data/augment/flipp", true)), "data.augment.flipp");
  EXPECT_EQ(field_of(with("/checkpoint", 1)), "checkpoint");  // not a section
  EXPECT_EQ(field_of(base(), {parse_override("distributed.timeout=5")}), "distributed.timeout");
  EXPECT_EQ(field_of(with("/distributed/hang_timeout_s", 400)), "distributed.hang_timeout_s");
  EXPECT_EQ(field_of(base()), "<accepted>");
}
