#pragma once
// [Staging] Lets a backend carry tensors that live on another device than the one it moves data on:
// each collective copies its tensor to the backend's device, runs there, and the Work copies the
// result back when it completes. Tensors already on that device pass straight through.
//   - mpi (host memory) staging CUDA tensors: how ranks that share one GPU (more local ranks than
//     devices, where NCCL refuses to run) still train on the GPU, at two PCIe copies per collective;
//   - nccl (cuda:<local rank>) staging CPU tensors: the trainer's small control-plane collectives
//     (flags, counts, checksums, statistics) are CPU tensors on every backend.
#include <memory>

#include "common/comm/communicator.h"

namespace rx::comm {

std::unique_ptr<Communicator> stage_through(std::unique_ptr<Communicator> inner,
                                            torch::Device backend_device);

}  // namespace rx::comm
