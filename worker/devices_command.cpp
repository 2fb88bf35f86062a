// `resnext_worker devices`: what this build and node can train on (CUDA build? GPUs? versions).
// Scripts (launch/gpu_check.sh, the GPU tests) ask the binary itself rather than guessing.
#include <iostream>

#include "common/comm/factory.h"
#include "worker/commands.h"
#include "worker/run_record.h"

namespace rx::worker {

using json = nlohmann::json;

int devices_command(const std::vector<std::string>& args) {
  Args cli(args, {}, {"help", "json"});
  if (cli.has("help")) {
    std::cout << "usage: resnext_worker devices [--json]\n"
                 "prints whether this build has CUDA/NCCL, the visible GPUs and the library versions\n";
    return 0;
  }
  const bool cuda_build = comm::has_nccl_backend();
  const int gpus =
      cuda_build && torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  json out = {{"cuda_build", cuda_build},
              {"cuda_devices", gpus},
              {"devices", json::array()},
              {"versions", runtime_versions()}};
  for (int i = 0; i < gpus; ++i)
    out["devices"].push_back(device_info(torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(i))));
  if (cli.has("json")) {
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::cout << "build: " << (cuda_build ? "CUDA + NCCL" : "CPU only") << "\n";
  std::cout << "CUDA devices: " << gpus << "\n";
  for (const auto& d : out["devices"])
    std::cout << "  cuda:" << d.value("index", 0) << "  " << d.value("name", std::string()) << "  "
              << d.value("total_memory_bytes", int64_t{0}) / (1 << 20) << " MiB  sm_"
              << d.value("compute_capability", std::string()) << "\n";
  std::cout << "versions: " << out["versions"].dump() << "\n";
  return 0;
}

}  // namespace rx::worker
