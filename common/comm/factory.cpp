#include "common/comm/factory.h"

#include "common/comm/mpi/mpi_communicator.h"
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
  const bool want_nccl = backend == "nccl" || (backend == "auto" && cuda_device);
  if (!want_nccl) {
    if (cuda_device) {
      throw ConfigError(kField, "the mpi backend moves CPU tensors only; use nccl (or auto) to train on CUDA");
    }
    return make_mpi_communicator(MPI_COMM_WORLD);
  }
  if (!has_nccl_backend()) {
    throw ConfigError(kField, "this build has no NCCL (built without a CUDA LibTorch)");
  }
  if (!cuda_device) throw ConfigError(kField, "nccl needs a CUDA device; use mpi (or auto) on CPU");
#ifdef RX_WITH_CUDA
  return make_nccl_communicator(MPI_COMM_WORLD);
#else
  return nullptr;  // unreachable
#endif
}

}  // namespace rx::comm
