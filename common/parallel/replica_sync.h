#pragma once
// Keeping data-parallel replicas identical: one starting point, one averaged gradient, and a cheap
// check that nothing drifted.
#include <torch/nn.h>

#include <cstdint>

#include "common/comm/communicator.h"

namespace rx::parallel {

// Rank `root` sends every parameter and buffer; the others overwrite theirs (in place).
void broadcast_module_state(torch::nn::Module& module, comm::Communicator& comm, int root,
                            comm::Millis timeout);

// Broadcast of buffers only (BN running statistics), before every evaluation.
void broadcast_buffers(torch::nn::Module& module, comm::Communicator& comm, int root, comm::Millis timeout);

// [Replica checksum] A 64-bit hash of the exact bytes of every parameter (in registration order).
// Bit-identical replicas give equal hashes; any drift, even one ulp, changes it.
uint64_t parameter_checksum(const torch::nn::Module& module);

// All-gathers every rank's checksum; throws CommError naming the ranks that differ from rank 0.
void verify_replicas(const torch::nn::Module& module, comm::Communicator& comm, const std::string& when,
                     comm::Millis timeout);

// [Flat all-reduce] The first-version gradient sync: copy every gradient into one flat buffer, one
// all-reduce (sum), divide by the world size, copy back. Summation order is the backend's, fixed
// for a given world size, so replicas stay bit-identical. The buffer is kept between steps.
class FlatGradientAllreduce {
 public:
  FlatGradientAllreduce(torch::nn::Module& module, comm::Communicator& comm, comm::Millis timeout);
  void sync();  // after backward, before the optimizer step

 private:
  std::vector<torch::Tensor> params_;
  torch::Tensor flat_;
  comm::Communicator& comm_;
  comm::Millis timeout_;
};

}  // namespace rx::parallel
