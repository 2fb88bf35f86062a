#include "common/parallel/replica_sync.h"

#include <cstring>
#include <sstream>

#include "common/util/error.h"

namespace rx::parallel {

static void broadcast_tensors(std::vector<torch::Tensor> tensors, comm::Communicator& comm, int root,
                              comm::Millis timeout) {
  torch::NoGradGuard no_grad;
  comm::BroadcastOptions opts;
  opts.root = root;
  opts.timeout = timeout;
  for (auto& t : tensors) {
    torch::Tensor buf = t.is_contiguous() ? t : t.contiguous();
    comm.broadcast(buf, opts)->wait(timeout);
    if (!buf.is_same(t)) t.copy_(buf);
  }
}

void broadcast_module_state(torch::nn::Module& module, comm::Communicator& comm, int root,
                            comm::Millis timeout) {
  auto tensors = module.parameters();
  for (auto& b : module.buffers()) tensors.push_back(b);
  broadcast_tensors(tensors, comm, root, timeout);
}

void broadcast_buffers(torch::nn::Module& module, comm::Communicator& comm, int root, comm::Millis timeout) {
  broadcast_tensors(module.buffers(), comm, root, timeout);
}

uint64_t parameter_checksum(const torch::nn::Module& module) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (const auto& p : module.parameters()) {
    auto cpu = p.detach().to(torch::kCPU).contiguous();
    const auto* bytes = static_cast<const uint8_t*>(cpu.data_ptr());
    const size_t n = static_cast<size_t>(cpu.numel()) * cpu.element_size();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, bytes + i, 8);
      h = (h ^ w) * 0x100000001b3ULL;
      h ^= h >> 29;
    }
    for (; i < n; ++i) h = (h ^ bytes[i]) * 0x100000001b3ULL;
  }
  return h;
}

void verify_replicas(const torch::nn::Module& module, comm::Communicator& comm, const std::string& when,
                     comm::Millis timeout) {
  const uint64_t mine = parameter_checksum(module);
  auto in = torch::tensor({static_cast<int64_t>(mine)}, torch::kInt64);
  auto all = torch::empty({comm.world_size()}, torch::kInt64);
  comm::AllgatherOptions opts;
  opts.timeout = timeout;
  comm.allgather(in, all, opts)->wait(timeout);
  const auto* v = all.data_ptr<int64_t>();
  std::ostringstream bad;
  for (int r = 1; r < comm.world_size(); ++r)
    if (v[r] != v[0]) bad << (bad.tellp() > 0 ? ", " : "") << r;
  if (bad.tellp() > 0)
    throw CommError(
        comm.backend_name(), comm.rank(),
        "replicas diverged " + when + ": parameters of rank(s) " + bad.str() + " differ from rank 0");
}

FlatGradientAllreduce::FlatGradientAllreduce(torch::nn::Module& module, comm::Communicator& comm,
                                             comm::Millis timeout)
    : comm_(comm), timeout_(timeout) {
  int64_t total = 0;
  for (auto& p : module.parameters())
    if (p.requires_grad()) {
      params_.push_back(p);
      total += p.numel();
    }
  RX_CHECK(!params_.empty(), "a model without trainable parameters");
  flat_ = torch::zeros({total}, params_.front().options());
}

void FlatGradientAllreduce::sync() {
  torch::NoGradGuard no_grad;
  int64_t off = 0;
  for (auto& p : params_) {
    const auto n = p.numel();
    if (!p.grad().defined()) throw Error("gradient sync: a parameter got no gradient this step");
    flat_.narrow(0, off, n).copy_(p.grad().reshape({n}));
    off += n;
  }
  comm::AllreduceOptions opts;
  opts.op = comm::ReduceOp::kSum;
  opts.timeout = timeout_;
  comm_.allreduce(flat_, opts)->wait(timeout_);
  if (comm_.world_size() > 1) flat_.div_(comm_.world_size());
  off = 0;
  for (auto& p : params_) {
    const auto n = p.numel();
    p.grad().copy_(flat_.narrow(0, off, n).view(p.grad().sizes()));
    off += n;
  }
}

}  // namespace rx::parallel
