#include <gtest/gtest.h>

#include "common/config/job_spec.h"
#include "worker/lr_schedule.h"

using nlohmann::json;

static rx::config::TrainingSpec training(const std::string& schedule, double warmup = 0, bool scale = false) {
  auto spec = rx::config::from_json(json::parse(R"({"model": {"preset": "resnext20_tiny"},
      "data": {"format": "idx", "path": "x"}, "training": {"epochs": 300}})"),
                                    {{"training.lr_schedule.name", schedule},
                                     {"training.lr_schedule.warmup_epochs", warmup},
                                     {"training.lr_schedule.scale_with_world", scale}});
  return spec.training;
}

TEST(LrSchedule, PaperMultiStep) {
  auto t = training("multistep");
  EXPECT_DOUBLE_EQ(rx::worker::learning_rate(t, 4, 0), 0.1);
  EXPECT_DOUBLE_EQ(rx::worker::learning_rate(t, 4, 149.9), 0.1);
  EXPECT_NEAR(rx::worker::learning_rate(t, 4, 150), 0.01, 1e-12);
  EXPECT_NEAR(rx::worker::learning_rate(t, 4, 225), 0.001, 1e-12);
}

TEST(LrSchedule, CosineWarmupAndScaling) {
  auto t = training("cosine", 5);
  EXPECT_NEAR(rx::worker::learning_rate(t, 1, 0), 0.01, 1e-12);  // warm-up starts at lr/10
  EXPECT_NEAR(rx::worker::learning_rate(t, 1, 5), 0.1, 1e-12);
  EXPECT_NEAR(rx::worker::learning_rate(t, 1, 152.5), 0.05, 1e-9);  // half-way through the cosine
  EXPECT_NEAR(rx::worker::learning_rate(t, 1, 300), 0.0, 1e-12);
  auto s = training("constant", 0, true);
  EXPECT_DOUBLE_EQ(rx::worker::learning_rate(s, 8, 10), 0.8);
}
