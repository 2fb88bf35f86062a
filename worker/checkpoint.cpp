#include "worker/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/config/job_config.h"
#include "common/util/error.h"
#include "common/util/file_util.h"
#include "common/util/sha256.h"

namespace rx::worker {

namespace fs = std::filesystem;
using json = nlohmann::json;

CheckpointStore::CheckpointStore(std::string dir, int keep)
    : dir_(std::move(dir)), keep_(std::max(1, keep)) {}

std::string CheckpointStore::pt_path(int64_t step) const {
  return dir_ + "/ckpt-" + std::to_string(step) + ".pt";
}
std::string CheckpointStore::json_path(int64_t step) const {
  return dir_ + "/ckpt-" + std::to_string(step) + ".json";
}

std::vector<int64_t> CheckpointStore::steps_newest_first() const {
  std::vector<int64_t> steps;
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return steps;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("ckpt-", 0) != 0 || e.path().extension() != ".json") continue;
    try {
      steps.push_back(std::stoll(name.substr(5, name.size() - 10)));
    } catch (const std::exception&) {
      // not one of ours
    }
  }
  std::sort(steps.rbegin(), steps.rend());
  return steps;
}

void CheckpointStore::save(int64_t step, torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                           const json& cursor, const optim::WeightEma* ema) {
  fs::create_directories(dir_);
  torch::serialize::OutputArchive archive;
  model.save(archive);
  torch::serialize::OutputArchive opt_archive;
  optimizer.save(opt_archive);
  archive.write("optimizer", opt_archive);
  if (ema) ema->save(archive);
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    archive.write("cpu_rng_state", gen.get_state());
  }
  std::ostringstream bytes;
  archive.save_to(bytes);
  const std::string data = bytes.str();
  write_file_atomic(pt_path(step), data);
  json meta = cursor;
  meta["global_step"] = step;
  meta["pt_sha256"] = rx::sha256_hex(data);
  meta["pt_bytes"] = data.size();
  write_file_atomic(json_path(step), meta.dump(2) + "\n");
  auto steps = steps_newest_first();
  for (size_t i = static_cast<size_t>(keep_); i < steps.size(); ++i) {
    std::error_code ec;
    fs::remove(json_path(steps[i]), ec);  // the marker first: a half-pruned pair is never loaded
    fs::remove(pt_path(steps[i]), ec);
  }
}

std::optional<json> CheckpointStore::load_latest(torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                                                 optim::WeightEma* ema) {
  for (int64_t step : steps_newest_first()) {
    try {
      std::ifstream meta_in(json_path(step));
      json meta = json::parse(meta_in, nullptr, /*allow_exceptions=*/false);
      if (meta.is_discarded() || !meta.contains("pt_sha256"))
        throw DataError(json_path(step), "unreadable metadata");
      const std::string data = read_file(pt_path(step));
      if (rx::sha256_hex(data) != meta["pt_sha256"].get<std::string>())
        throw DataError(pt_path(step), "checksum mismatch (" + std::to_string(data.size()) +
                                           " bytes, expected " + std::to_string(meta.value("pt_bytes", 0)) +
                                           "): truncated or corrupt");
      // [Load onto the model's device] Tensors are mapped onto the device the model lives on, not the
      // one they were saved from: a checkpoint written on a GPU resumes on the CPU (and vice versa).
      // Without it Module::load would swap CUDA storage into a CPU model.
      const auto params = model.parameters();
      const torch::Device device = params.empty() ? torch::Device(torch::kCPU) : params.front().device();
      torch::serialize::InputArchive archive;
      archive.load_from(data.data(), data.size(), device);
      model.load(archive);
      torch::serialize::InputArchive opt_archive;
      archive.read("optimizer", opt_archive);
      optimizer.load(opt_archive);
      if (ema && !ema->load(archive)) {  // written with training.ema_decay off: average from here on
        ema->restart();
        spdlog::warn("checkpoint {} has no weight average; the EMA starts at its weights", json_path(step));
      }
      torch::Tensor rng;
      if (archive.try_read("cpu_rng_state", rng)) {
        auto gen = at::detail::getDefaultCPUGenerator();
        std::lock_guard<std::mutex> lock(gen.mutex());
        gen.set_state(rng.to(torch::kCPU));  // mapped onto the model's device with everything else
      }
      spdlog::info("resuming from checkpoint {} (epoch {}, position {})", json_path(step),
                   meta.value("epoch", 0), meta.value("epoch_position", 0));
      return meta;
    } catch (const std::exception& e) {
      spdlog::warn("checkpoint at step {} is not usable, trying the one before: {}", step, e.what());
    }
  }
  return std::nullopt;
}

}  // namespace rx::worker
