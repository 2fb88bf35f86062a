#include "worker/run_record.h"

#include <mpi.h>
#include <torch/version.h>
#include <unistd.h>

#include <ctime>

#include "common/config/job_config.h"

#ifdef RX_WITH_CUDA
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

json runtime_versions() {
  char mpi[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int len = 0;
  MPI_Get_library_version(mpi, &len);
  std::string mpi_version(mpi, static_cast<size_t>(len));
  if (auto nl = mpi_version.find_first_of("\n,"); nl != std::string::npos) mpi_version.resize(nl);
  json v = {{"libtorch", std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
                             std::to_string(TORCH_VERSION_PATCH)},
            {"mpi", mpi_version},
            {"compiler", std::string("gcc ") + __VERSION__},
            {"cuda", nullptr},
            {"nccl", nullptr}};
#ifdef RX_WITH_CUDA
  int nccl = 0;
  ncclGetVersion(&nccl);
  v["nccl"] = nccl;
  v["cuda"] = torch::cuda::is_available() ? "available" : "not available";
#endif
  return v;
}

RunRecordBuilder::RunRecordBuilder(const json& cfg, const comm::Communicator& comm, torch::Device device) {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  record_ = {{"config", cfg},
             {"config_sha256", config::config_hash(cfg)},
             {"world_size", comm.world_size()},
             {"backend", comm.backend_name()},
             {"seed", cfg.at("training").at("seed")},
             {"model", cfg.at("model")},
             {"host", host},
             {"device", device.str()},
             {"versions", runtime_versions()},
             {"started_at", utc_now()},
             {"epochs", json::array()}};
}

void RunRecordBuilder::set_dataset(int64_t train, int64_t test, int64_t steps) {
  record_["dataset"] = {{"train_samples", train}, {"test_samples", test}, {"steps_per_epoch", steps}};
}

void RunRecordBuilder::add_epoch(json entry) { record_["epochs"].push_back(std::move(entry)); }

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
  record_["per_class_accuracy"] = last_eval.value("per_class_accuracy", json::array());
  record_["confusion_matrix"] = last_eval.value("confusion_matrix", json::array());
  record_["ranks"] = std::move(ranks);
  record_["total_images_per_sec"] = total_ips;
  record_["exposed_comm_share"] = record_["ranks"].empty() ? 0.0 : comm_share / record_["ranks"].size();
  record_["wall_seconds"] = wall_seconds;
  record_["finished_at"] = utc_now();
  return record_;
}

}  // namespace rx::worker
