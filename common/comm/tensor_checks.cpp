#include "common/comm/tensor_checks.h"

#include <sstream>

#include "common/util/error.h"

namespace rx::comm {

namespace {
[[noreturn]] void fail(const OpContext& ctx, const std::string& msg) {
  throw CommError(ctx.backend, ctx.rank, std::string(ctx.op) + ": " + msg);
}
}  // namespace

void check_tensor(const OpContext& ctx, const torch::Tensor& t, bool cpu) {
  if (!t.defined()) fail(ctx, "tensor is undefined");
  if (cpu && !t.device().is_cpu()) {
    fail(ctx, "tensor is on " + t.device().str() + " but the " + ctx.backend +
                  " backend works on CPU tensors only");
  }
  if (!t.is_contiguous()) fail(ctx, "tensor must be contiguous (call .contiguous() first)");
}

void check_allgather_output(const OpContext& ctx, const torch::Tensor& input, const torch::Tensor& output,
                            int world_size) {
  if (!output.defined()) fail(ctx, "output tensor is undefined");
  if (output.scalar_type() != input.scalar_type()) {
    fail(ctx, std::string("output dtype ") + c10::toString(output.scalar_type()) +
                  " differs from input dtype " + c10::toString(input.scalar_type()));
  }
  if (output.device() != input.device()) fail(ctx, "output and input are on different devices");
  if (output.numel() != input.numel() * world_size) {
    std::ostringstream os;
    os << "output has " << output.numel() << " elements, expected world_size * input.numel() = " << world_size
       << " * " << input.numel();
    fail(ctx, os.str());
  }
}

void check_reduce_op(const OpContext& ctx, const torch::Tensor& t, ReduceOp op) {
  if (op == ReduceOp::kAvg && !t.is_floating_point()) {
    fail(ctx, std::string("avg needs a floating-point tensor, got ") + c10::toString(t.scalar_type()) +
                  " (reduce with sum and divide yourself)");
  }
}

void check_root(const OpContext& ctx, int root, int world_size) {
  if (root < 0 || root >= world_size) {
    fail(ctx, "root " + std::to_string(root) + " is outside [0, " + std::to_string(world_size) + ")");
  }
}

}  // namespace rx::comm
