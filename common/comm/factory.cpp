#include "common/comm/factory.h"

#include "common/comm/mpi/mpi_communicator.h"
#include "common/comm/staging.h"
#include "common/util/error.h"
#ifdef RX_WITH_CUDA
#include "common/comm/nccl/nccl_communicator.h"
#endif

namespace rx::comm {

namespace {
constexpr const char* kField = "distributed.backend";
}

bool has_nccl_backend() {
#ifdef RX_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::unique_ptr<Communicator> make_communicator(const std::string& backend, bool cuda_device) {
  if (backend != "auto" && backend != "mpi" && backend != "nccl") {
    throw ConfigError(kField, "unknown backend '" + backend + "' (expected auto, mpi or nccl)");
  }
  bool want_nccl = backend == "nccl";
  if (backend == "auto" && cuda_device) {
    auto mpi = make_mpi_communicator(MPI_COMM_WORLD);
    want_nccl = has_nccl_backend() && mpi->local_size() <= static_cast<int>(torch::cuda::device_count());
    if (!want_nccl) return stage_through(std::move(mpi), torch::kCPU);
  }
  if (!want_nccl) {
    auto mpi = make_mpi_communicator(MPI_COMM_WORLD);
    return cuda_device ? stage_through(std::move(mpi), torch::kCPU) : std::move(mpi);
  }
  if (!has_nccl_backend()) {
    throw ConfigError(kField, "this build has no NCCL (built without a CUDA LibTorch)");
  }
  if (!cuda_device) throw ConfigError(kField, "nccl needs a CUDA device; use mpi (or auto) on CPU");
#ifdef RX_WITH_CUDA
  auto nccl = make_nccl_communicator(MPI_COMM_WORLD);
  const torch::Device device(torch::kCUDA, static_cast<c10::DeviceIndex>(nccl->local_rank()));
  return stage_through(std::move(nccl), device);  // CPU control-plane tensors ride on the GPU
#else
  return nullptr;  // unreachable
#endif
}

}  // namespace rx::comm
