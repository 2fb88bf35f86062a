#include "worker/run_record.h"

#include <mpi.h>
#include <torch/version.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <iterator>

#include "common/config/job_spec.h"

#ifdef RX_WITH_CUDA
#include <ATen/detail/CUDAHooksInterface.h>
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

namespace rx::worker {

using json = nlohmann::json;

static std::string utc_now() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

#ifdef RX_WITH_CUDA
namespace {
// 13000 -> "13.0" (CUDA's major*1000 + minor*10).
std::string cuda_version_string(int v) {
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}
}  // namespace
#endif

json runtime_versions() {
  char mpi[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int len = 0;
  MPI_Get_library_version(mpi, &len);
  std::string mpi_version(mpi, static_cast<size_t>(len));
  if (auto nl = mpi_version.find_first_of("\n,"); nl != std::string::npos) mpi_version.resize(nl);
  json v = {{"libtorch", std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) +
                             "." + std::to_string(TORCH_VERSION_PATCH)},
            {"mpi", mpi_version},
            {"compiler", std::string("gcc ") + __VERSION__},
            {"cuda", nullptr},
            {"nccl", nullptr}};
#ifdef RX_WITH_CUDA
  int nccl = 0, runtime = 0, driver = 0;
  ncclGetVersion(&nccl);  // major*10000 + minor*100 + patch since NCCL 2.9
  v["nccl"] = std::to_string(nccl / 10000) + "." + std::to_string((nccl % 10000) / 100) + "." +
              std::to_string(nccl % 100);
  if (cudaRuntimeGetVersion(&runtime) == cudaSuccess) v["cuda"] = cuda_version_string(runtime);
  // The driver's CUDA version is 0 where no driver is installed (a CPU-only machine running a CUDA build).
  if (cudaDriverGetVersion(&driver) == cudaSuccess && driver > 0)
    v["cuda_driver"] = cuda_version_string(driver);
  if (at::detail::getCUDAHooks().hasCuDNN()) {
    const long cudnn =
        at::detail::getCUDAHooks().versionCuDNN();  // major*10000 + minor*100 + patch (cuDNN 9)
    v["cudnn"] = std::to_string(cudnn / 10000) + "." + std::to_string((cudnn % 10000) / 100) + "." +
                 std::to_string(cudnn % 100);
  }
#endif
  return v;
}

json device_info([[maybe_unused]] torch::Device device) {
  json d = {{"type", device.is_cuda() ? "cuda" : "cpu"}, {"name", device.str()}};
#ifdef RX_WITH_CUDA
  if (device.is_cuda()) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, device.index()) == cudaSuccess) {
      d["name"] = prop.name;
      d["total_memory_bytes"] = static_cast<int64_t>(prop.totalGlobalMem);
      d["compute_capability"] = std::to_string(prop.major) + "." + std::to_string(prop.minor);
      d["multiprocessors"] = prop.multiProcessorCount;
    }
    d["index"] = device.index();
  }
#endif
  return d;
}

// [Recipe] The regularisers that shape accuracy, named once so a reader comparing runs does not dig
// through the config: null where one is off.
json recipe_json(const config::JobSpec& spec, int world_size) {
  const auto& a = spec.data.augment;
  const auto& t = spec.training;
  json erasing = nullptr, ema = nullptr;
  if (a.erasing > 0)
    erasing = {{"probability", a.erasing}, {"scale", a.erasing_scale}, {"ratio", a.erasing_ratio}};
  if (t.ema_decay > 0) ema = {{"decay", t.ema_decay}, {"evaluated", "test_accuracy is the average's"}};
  return {{"crop_padding", a.crop_padding},
          {"flip", a.flip},
          {"random_erasing", erasing},
          {"label_smoothing", t.label_smoothing},
          {"weight_ema", ema},
          {"epochs", t.epochs},
          {"global_batch", t.batch_size * t.accumulate_steps * world_size}};
}

RunRecordBuilder::RunRecordBuilder(const config::JobSpec& spec, const comm::Communicator& comm,
                                   torch::Device device) {
  const json cfg = config::to_json(spec);  // resolve()'s document, byte for byte ([Number spelling])
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  record_ = {{"config", cfg},
             {"config_sha256", config::config_hash(cfg)},
             {"world_size", comm.world_size()},
             {"backend", comm.backend_name()},
             {"seed", spec.training.seed},
             {"model", config::model_json(spec)},
             {"host", host},
             {"device", device.str()},
             {"device_info", device_info(device)},
             {"versions", runtime_versions()},
             {"started_at", utc_now()},
             {"recipe", recipe_json(spec, comm.world_size())},
             {"epochs", json::array()}};
}

void RunRecordBuilder::set_dataset(int64_t train, int64_t test, int64_t steps) {
  record_["dataset"] = {{"train_samples", train}, {"test_samples", test}, {"steps_per_epoch", steps}};
}

void RunRecordBuilder::add_epoch(json entry) { record_["epochs"].push_back(std::move(entry)); }

// [Per-node view] Ranks grouped by the host they ran on, in order of first appearance: the node's
// summed throughput and its ranks' summed peak memory (ranks share the node's RAM). A slow node shows
// here even when each of its ranks looks only a little slow among many.
json node_aggregates(const json& ranks) {
  json nodes = json::array();
  for (const auto& r : ranks) {
    const std::string host = r.value("host", "");
    auto it = std::find_if(nodes.begin(), nodes.end(), [&](const json& n) { return n["host"] == host; });
    if (it == nodes.end()) {
      nodes.push_back(
          {{"host", host}, {"ranks", json::array()}, {"images_per_sec", 0.0}, {"peak_memory_bytes", 0}});
      it = std::prev(nodes.end());
    }
    (*it)["ranks"].push_back(r["rank"]);
    (*it)["images_per_sec"] = (*it)["images_per_sec"].get<double>() + r.value("images_per_sec", 0.0);
    (*it)["peak_memory_bytes"] =
        (*it)["peak_memory_bytes"].get<int64_t>() + r.value("peak_memory_bytes", int64_t{0});
  }
  return nodes;
}

json with_straggler_host(json reducer_stats, const json& ranks) {
  if (!reducer_stats.contains("straggler") || !reducer_stats["straggler"].is_object()) return reducer_stats;
  auto& s = reducer_stats["straggler"];
  s["host"] = nullptr;
  if (s.value("rank", json()).is_number_integer()) {
    const int r = s["rank"].get<int>();
    for (const auto& x : ranks)
      if (x.value("rank", -1) == r) s["host"] = x.value("host", "");
  }
  return reducer_stats;
}

json RunRecordBuilder::finish(double final_accuracy, double best_accuracy, const json& last_eval, json ranks,
                              double wall_seconds) {
  double total_ips = 0, comm_share = 0;
  for (const auto& r : ranks) {
    total_ips += r["images_per_sec"].get<double>();
    const double total = r["step_time_ms"]["total"].get<double>();
    comm_share += total > 0 ? r["step_time_ms"]["comm_exposed"].get<double>() / total : 0;
  }
  record_["final_test_accuracy"] = final_accuracy;
  record_["best_test_accuracy"] = best_accuracy;
  record_["test_loss"] = last_eval.value("loss", 0.0);
  if (last_eval.contains("raw_accuracy"))  // training.ema_decay: the model's own weights, not the average
    record_["final_test_accuracy_raw"] = last_eval["raw_accuracy"];
  record_["per_class_accuracy"] = last_eval.value("per_class_accuracy", json::array());
  record_["confusion_matrix"] = last_eval.value("confusion_matrix", json::array());
  record_["nodes"] = node_aggregates(ranks);
  record_["ranks"] = std::move(ranks);
  record_["total_images_per_sec"] = total_ips;
  record_["exposed_comm_share"] = record_["ranks"].empty() ? 0.0 : comm_share / record_["ranks"].size();
  record_["wall_seconds"] = wall_seconds;
  record_["finished_at"] = utc_now();
  return record_;
}

}  // namespace rx::worker
