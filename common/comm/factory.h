#pragma once
// Picks the communication backend from the job config's distributed.backend.
#include <memory>
#include <string>

#include "common/comm/communicator.h"

namespace rx::comm {

// backend: "auto" (nccl when training on a CUDA device, mpi on CPU), "mpi" or "nccl", over
// MPI_COMM_WORLD. MPI must be initialised (rx::comm::MpiRuntime). Throws ConfigError for an unknown
// backend, for "nccl" in a build without CUDA/NCCL or without a CUDA device, and for "mpi" with a
// CUDA device (the mpi backend moves CPU tensors only).
std::unique_ptr<Communicator> make_communicator(const std::string& backend, bool cuda_device);

// True when this build has the NCCL backend (RX_WITH_CUDA).
bool has_nccl_backend();

}  // namespace rx::comm
