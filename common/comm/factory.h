#pragma once
// Picks the communication backend from the job config's distributed.backend.
#include <memory>
#include <string>

#include "common/comm/communicator.h"

namespace rx::comm {

// backend: "auto", "mpi" or "nccl", over MPI_COMM_WORLD. MPI must be initialised
// (rx::comm::MpiRuntime). [Backend choice] "auto" is mpi on the CPU; on a CUDA device it is nccl when
// every local rank has a GPU of its own, else mpi staged through host memory (comm/staging.h): NCCL
// refuses two ranks on one GPU. "mpi" on a CUDA device is always staged; "nccl" stages CPU tensors
// through its GPU. Throws ConfigError for
// an unknown backend and for "nccl" in a build without CUDA/NCCL or without a CUDA device.
std::unique_ptr<Communicator> make_communicator(const std::string& backend, bool cuda_device);

// True when this build has the NCCL backend (RX_WITH_CUDA).
bool has_nccl_backend();

}  // namespace rx::comm
