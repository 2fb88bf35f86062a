#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "common/config/job_config.h"
#include "common/config/schema.h"
#include "common/util/error.h"
#include "common/util/sha256.h"

using nlohmann::json;
using namespace rx::config;

static json base() {
  return json::parse(R"({"model": {"preset": "resnext20_tiny"},
                         "data": {"format": "idx", "path": "/usr/share/datasets/fashion-mnist"}})");
}

static std::string field_of(const json& cfg, std::vector<Override> o = {}) {
  try {
    resolve(cfg, o);
  } catch (const rx::ConfigError& e) {
    return e.field();
  }
  return "<accepted>";
}

TEST(Config, DefaultsAreFilledAndExplicit) {
  auto r = resolve(base());
  EXPECT_EQ(r["training"]["epochs"], 1);
  EXPECT_EQ(r["distributed"]["backend"], "auto");
  EXPECT_EQ(r["data"]["augment"]["std"].size(), 3u);
  EXPECT_EQ(model_spec(r).in_channels, 1);  // idx data is grey
  EXPECT_EQ(resolve(r), r) << "resolving a resolved config is the identity";
}

TEST(Config, OverridesApplyAndAreTypeChecked) {
  auto r = resolve(base(), {parse_override("training.epochs=3"), parse_override("output.dir=/tmp/x")});
  EXPECT_EQ(r["training"]["epochs"], 3);
  EXPECT_EQ(r["output"]["dir"], "/tmp/x");
  EXPECT_EQ(field_of(base(), {parse_override("training.epochs=three")}), "training.epochs");
  EXPECT_EQ(field_of(base(), {parse_override("training.epoch=3")}), "training.epoch");
  EXPECT_THROW(parse_override("noequals"), rx::ConfigError);
}

TEST(Config, BadConfigMatrixNamesTheKey) {
  auto with = [](const std::string& ptr, json v) {
    auto c = base();
    c[json::json_pointer(ptr)] = v;
    return c;
  };
  EXPECT_EQ(field_of(with("/training/epochs", "3")), "training.epochs");  // wrong type
  EXPECT_EQ(field_of(with("/training/epochs", 0)), "training.epochs");    // out of range
  EXPECT_EQ(field_of(with("/training/epochs", 1.5)), "training.epochs");  // not an integer
  EXPECT_EQ(field_of(with("/training/batch_size", -8)), "training.batch_size");
  EXPECT_EQ(field_of(with("/training/optimizer/name", "rmsprop")), "training.optimizer.name");
  EXPECT_EQ(field_of(with("/training/optimizer/lr", -0.1)), "training.optimizer.lr");
  EXPECT_EQ(field_of(with("/training/bogus", 1)), "training.bogus");  // unknown key
  EXPECT_EQ(field_of(with("/extra", 1)), "extra");
  EXPECT_EQ(field_of(with("/data/augment", 3)), "data.augment");  // section not an object
  EXPECT_EQ(field_of(with("/data/format", "png")), "data.format");
  EXPECT_EQ(field_of(with("/model/preset", "resnext_huge")), "model.preset");
  EXPECT_EQ(field_of(with("/distributed/backend", "gloo")), "distributed.backend");
  EXPECT_EQ(field_of(with("/training/lr_schedule/milestones", json{0.75, 0.5})),
            "training.lr_schedule.milestones");
  EXPECT_EQ(field_of(with("/training/lr_schedule/milestones", json{0.5, 1.5})),
            "training.lr_schedule.milestones");
  EXPECT_EQ(field_of(with("/data/augment/std", json{0.5, 0.0, 0.5})), "data.augment.std");
  json long_list = json::array();  // a list past 64 values (a megabyte of milestones was accepted once)
  for (int i = 1; i <= 65; ++i) long_list.push_back(i / 66.0);
  EXPECT_EQ(field_of(with("/training/lr_schedule/milestones", long_list)), "training.lr_schedule.milestones");
  long_list.erase(long_list.begin());
  EXPECT_EQ(field_of(with("/training/lr_schedule/milestones", long_list)), "<accepted>") << "64 values";
  auto custom = base();
  custom["model"] = {{"depth", 29}, {"cardinality", 8}};
  EXPECT_EQ(field_of(custom), "model.base_width");
  custom["model"]["base_width"] = 64;
  custom["model"]["preset"] = "resnext29_8x64d";
  EXPECT_EQ(field_of(custom), "model.preset");
  custom["model"].erase("preset");
  custom["model"]["depth"] = 28;
  EXPECT_EQ(field_of(custom), "model.depth");
  auto nodata = base();
  nodata["data"].erase("path");
  EXPECT_EQ(field_of(nodata), "data.path");
  EXPECT_EQ(field_of(json::array()), "config");
}

TEST(Config, HashIsStableAndSensitive) {
  auto a = resolve(base());
  auto b = resolve(base(), {parse_override("training.seed=2")});
  EXPECT_EQ(config_hash(a), config_hash(resolve(base())));
  EXPECT_NE(config_hash(a), config_hash(b));
  EXPECT_EQ(rx::sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

// Every config shipped in configs/ (found by listing the folder, so a new one is covered without
// editing this test) resolves, and the list is not empty.
TEST(Config, EveryShippedConfigResolves) {
  const char* src = std::getenv("RX_SOURCE_DIR");
  ASSERT_NE(src, nullptr) << "RX_SOURCE_DIR is set by CTest";
  std::vector<std::string> configs;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(src) + "/configs"))
    if (entry.is_regular_file() && entry.path().extension() == ".json")
      configs.push_back(entry.path().string());
  ASSERT_FALSE(configs.empty()) << "no configs/*.json under " << src;
  for (const auto& path : configs) {
    try {
      resolve_file(path);
    } catch (const std::exception& e) {
      ADD_FAILURE() << path << ": " << e.what();
    }
  }
  std::cout << configs.size() << " configs checked\n";
}
