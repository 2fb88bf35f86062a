#include "common/comm/thread/thread_communicator.h"

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <sstream>

#include "common/comm/tensor_checks.h"
#include "common/util/error.h"

namespace rx::comm {
namespace {

enum class Kind { kAllreduce, kBroadcast, kAllgather, kBarrier };

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kAllreduce:
      return "allreduce";
    case Kind::kBroadcast:
      return "broadcast";
    case Kind::kAllgather:
      return "allgather";
    case Kind::kBarrier:
      return "barrier";
  }
  return "?";
}

// What one rank posts; the first poster of a round fixes it and the others must match.
struct Request {
  Kind kind = Kind::kBarrier;
  ReduceOp op = ReduceOp::kSum;
  int root = 0;
  int64_t numel = 0;
  c10::ScalarType dtype = c10::kFloat;
};

struct Round {
  Request req;
  std::vector<torch::Tensor> inputs;  // by rank
  int arrived = 0;
  int released = 0;
  bool computed = false;
  torch::Tensor result;
};

struct Store {
  explicit Store(int world) : world(world) {}
  const int world;
  std::mutex mu;
  std::condition_variable cv;
  std::map<uint64_t, Round> rounds;  // by collective sequence number
};

void compute(Round& r, int world) {
  const Request& q = r.req;
  switch (q.kind) {
    case Kind::kAllreduce: {
      torch::Tensor acc = r.inputs[0].clone();
      for (int i = 1; i < world; ++i) {
        switch (q.op) {
          case ReduceOp::kSum:
          case ReduceOp::kAvg:
            acc.add_(r.inputs[i]);
            break;
          case ReduceOp::kMax:
            acc = torch::maximum(acc, r.inputs[i]);
            break;
          case ReduceOp::kMin:
            acc = torch::minimum(acc, r.inputs[i]);
            break;
        }
      }
      if (q.op == ReduceOp::kAvg) acc.div_(world);
      r.result = acc;
      break;
    }
    case Kind::kBroadcast:
      r.result = r.inputs[q.root].clone();
      break;
    case Kind::kAllgather: {
      std::vector<torch::Tensor> flat;
      for (const auto& t : r.inputs) flat.push_back(t.reshape({-1}));
      r.result = torch::cat(flat);
      break;
    }
    case Kind::kBarrier:
      break;
  }
  r.computed = true;
}

class ThreadWork : public Work {
 public:
  ThreadWork(std::shared_ptr<Store> store, uint64_t seq, int rank, Request req, torch::Tensor target,
             Millis default_timeout)
      : store_(std::move(store)),
        seq_(seq),
        rank_(rank),
        req_(req),
        target_(std::move(target)),
        default_timeout_(default_timeout) {}

  ~ThreadWork() override {
    if (done_) return;
    std::lock_guard<std::mutex> lock(store_->mu);
    release_locked();
  }

  bool is_completed() override {
    std::lock_guard<std::mutex> lock(store_->mu);
    if (done_) return true;
    if (round().arrived < store_->world) return false;
    finish_locked();
    return true;
  }

  void wait(Millis timeout) override {
    std::unique_lock<std::mutex> lock(store_->mu);
    if (done_) return;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    if (!store_->cv.wait_until(lock, deadline, [&] { return round().arrived == store_->world; })) {
      std::ostringstream os;
      os << kind_name(req_.kind);
      if (req_.kind != Kind::kBarrier) os << " of " << req_.numel << " elements";
      os << " timed out after " << timeout.count() << " ms (" << round().arrived << " of " << store_->world
         << " ranks arrived at collective #" << seq_ << ")";
      throw CommError("thread", rank_, os.str());
    }
    finish_locked();
  }

  Millis default_timeout() const override { return default_timeout_; }

 private:
  Round& round() { return store_->rounds.at(seq_); }

  void finish_locked() {
    Round& r = round();
    if (!r.computed) compute(r, store_->world);
    switch (req_.kind) {
      case Kind::kAllreduce:
        target_.copy_(r.result);
        break;
      case Kind::kBroadcast:
        if (rank_ != req_.root) target_.copy_(r.result);
        break;
      case Kind::kAllgather:
        target_.view({-1}).copy_(r.result);
        break;
      case Kind::kBarrier:
        break;
    }
    release_locked();
  }

  void release_locked() {
    done_ = true;
    auto it = store_->rounds.find(seq_);
    if (it != store_->rounds.end() && ++it->second.released == store_->world) store_->rounds.erase(it);
  }

  std::shared_ptr<Store> store_;
  uint64_t seq_;
  int rank_;
  Request req_;
  torch::Tensor target_;  // written on completion (the allgather output, else the tensor itself)
  Millis default_timeout_;
  bool done_ = false;
};

class ThreadCommunicator : public Communicator {
 public:
  ThreadCommunicator(std::shared_ptr<Store> store, int rank) : store_(std::move(store)), rank_(rank) {}

  std::string backend_name() const override { return "thread"; }
  // Reduces with LibTorch's own arithmetic: every real type (allreduce refuses bool and complex).
  Capabilities capabilities() const override {
    Capabilities c;
    c.allreduce_dtypes = {c10::kFloat, c10::kDouble, c10::kHalf, c10::kBFloat16, c10::kByte,
                          c10::kChar,  c10::kShort,  c10::kInt,  c10::kLong};
    c.reduce_ops = {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin};
    c.device = c10::DeviceType::CPU;
    return c;
  }
  int rank() const override { return rank_; }
  int world_size() const override { return store_->world; }

  std::shared_ptr<Work> allreduce(torch::Tensor& tensor, const AllreduceOptions& opts) override {
    const OpContext ctx{"thread", rank_, "allreduce"};
    check_tensor(ctx, tensor, /*cpu=*/true);
    check_reduce_op(ctx, tensor, opts.op);
    if (tensor.scalar_type() == c10::kBool || tensor.is_complex()) {
      throw CommError("thread", rank_,
                      std::string("allreduce of ") + c10::toString(tensor.scalar_type()) +
                          " is not supported by the thread backend");
    }
    Request req{Kind::kAllreduce, opts.op, 0, tensor.numel(), tensor.scalar_type()};
    return post(req, tensor, tensor, opts.timeout);
  }

  std::shared_ptr<Work> broadcast(torch::Tensor& tensor, const BroadcastOptions& opts) override {
    const OpContext ctx{"thread", rank_, "broadcast"};
    check_tensor(ctx, tensor, /*cpu=*/true);
    check_root(ctx, opts.root, store_->world);
    Request req{Kind::kBroadcast, ReduceOp::kSum, opts.root, tensor.numel(), tensor.scalar_type()};
    return post(req, tensor, tensor, opts.timeout);
  }

  std::shared_ptr<Work> allgather(const torch::Tensor& input, torch::Tensor& output,
                                  const AllgatherOptions& opts) override {
    const OpContext ctx{"thread", rank_, "allgather"};
    check_tensor(ctx, input, /*cpu=*/true);
    check_tensor(ctx, output, /*cpu=*/true);
    check_allgather_output(ctx, input, output, store_->world);
    Request req{Kind::kAllgather, ReduceOp::kSum, 0, input.numel(), input.scalar_type()};
    return post(req, input, output, opts.timeout);
  }

  void barrier(Millis timeout) override {
    post(Request{}, torch::Tensor(), torch::Tensor(), timeout)->wait(timeout);
  }

 private:
  std::shared_ptr<Work> post(const Request& req, const torch::Tensor& input, const torch::Tensor& target,
                             Millis timeout) {
    const uint64_t seq = next_seq_++;
    {
      std::lock_guard<std::mutex> lock(store_->mu);
      Round& r = store_->rounds[seq];
      if (r.arrived == 0 && r.inputs.empty()) {
        r.req = req;
        r.inputs.resize(static_cast<size_t>(store_->world));
      } else if (r.req.kind != req.kind || r.req.op != req.op || r.req.root != req.root ||
                 r.req.numel != req.numel || r.req.dtype != req.dtype) {
        std::ostringstream os;
        os << kind_name(req.kind) << " of " << req.numel << " " << c10::toString(req.dtype)
           << " does not match collective #" << seq << " posted by other ranks (" << kind_name(r.req.kind)
           << " of " << r.req.numel << " " << c10::toString(r.req.dtype) << ", op "
           << reduce_op_name(r.req.op) << ", root " << r.req.root << ")";
        throw CommError("thread", rank_, os.str());
      }
      r.inputs[static_cast<size_t>(rank_)] = input;
      if (++r.arrived == store_->world) store_->cv.notify_all();
    }
    return std::make_shared<ThreadWork>(store_, seq, rank_, req, target, timeout);
  }

  std::shared_ptr<Store> store_;
  int rank_;
  uint64_t next_seq_ = 0;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> make_thread_group(int world_size) {
  RX_CHECK(world_size >= 1, "world_size " << world_size);
  auto store = std::make_shared<Store>(world_size);
  std::vector<std::unique_ptr<Communicator>> group;
  for (int r = 0; r < world_size; ++r) group.push_back(std::make_unique<ThreadCommunicator>(store, r));
  return group;
}

}  // namespace rx::comm
