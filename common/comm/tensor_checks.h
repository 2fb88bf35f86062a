#pragma once
// Argument checks shared by the backends. A bad tensor is the caller's mistake, but it surfaces as
// CommError (naming backend, rank and op) so that one catch covers everything a collective can do.
#include <torch/torch.h>

#include <string>

#include "common/comm/communicator.h"

namespace rx::comm {

struct OpContext {
  std::string backend;
  int rank;
  const char* op;  // "allreduce", "broadcast", ...
};

// Throws unless `t` is defined and contiguous and (if `cpu`) on the CPU.
void check_tensor(const OpContext& ctx, const torch::Tensor& t, bool cpu);
// Throws unless `output` has world * input.numel() elements of input's dtype and device.
void check_allgather_output(const OpContext& ctx, const torch::Tensor& input, const torch::Tensor& output,
                            int world_size);
// Throws for kAvg on a non-floating-point tensor (integer division would silently truncate).
void check_reduce_op(const OpContext& ctx, const torch::Tensor& t, ReduceOp op);
// Throws unless 0 <= root < world_size.
void check_root(const OpContext& ctx, int root, int world_size);

}  // namespace rx::comm
