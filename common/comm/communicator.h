#pragma once
// [Communicator] The one interface training code sees for collectives, modelled on PyTorch
// c10d's Backend: every operation is asynchronous and returns a Work handle, and every wait has a
// deadline. Backends (comm/mpi, comm/nccl, comm/thread) each live in their own folder with the same
// file set, like gloo's transports; comm/factory.h picks one from the job config.
//
// [Timeouts] A collective whose peer died or diverged would block forever in a blocking library
// call. Here no call blocks: Work::wait polls until its deadline and then throws CommError naming
// the backend and rank, so the worker can report *which* rank gave up and abort the job instead of
// hanging until the scheduler kills it.
#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace rx::comm {

enum class ReduceOp { kSum, kAvg, kMax, kMin };
using Millis = std::chrono::milliseconds;

// `timeout` is the default deadline of Work::wait() (the overload without an argument).
struct AllreduceOptions {
  ReduceOp op = ReduceOp::kSum;
  Millis timeout{300000};
};
struct BroadcastOptions {
  int root = 0;
  Millis timeout{300000};
};
struct AllgatherOptions {
  Millis timeout{300000};
};

const char* reduce_op_name(ReduceOp op);

// [Capabilities] What a backend can do, stated by the backend itself: callers (the reducer's
// compression check, the tests) ask for a dtype or an op instead of comparing backend_name() with a
// string, so a new backend, or a wrapper (staging, tracing), answers for itself.
struct Capabilities {
  std::vector<c10::ScalarType> allreduce_dtypes;  // element types allreduce reduces
  std::vector<ReduceOp> reduce_ops;               // ops allreduce accepts
  c10::DeviceType device = c10::DeviceType::CPU;  // where the backend moves data itself
  // Tensors on another device are copied through `device` and back (comm/staging.h).
  bool staged = false;

  bool can_allreduce(c10::ScalarType t) const;
  bool supports(ReduceOp op) const;
  std::string dtype_list() const;  // "Float, Double, ..." for error messages
};

// Handle of an asynchronous operation. The tensors it works on must stay untouched until it has
// completed; the handle keeps them alive.
class Work {
 public:
  virtual ~Work() = default;
  // Non-blocking completion test (also drives the backend's progress, e.g. MPI's).
  virtual bool is_completed() = 0;
  // Blocks at most `timeout`; throws CommError naming backend and rank on timeout or failure.
  // After a timeout the operation is still pending (MPI cannot cancel a collective): the caller may
  // wait again, or, normally, abort the job.
  virtual void wait(Millis timeout) = 0;
  // Waits with the timeout given in the operation's options.
  void wait() { wait(default_timeout()); }
  // [Stream wait] Orders later work on the caller's current device stream after this operation.
  // Backends that complete on the host (MPI, threads) wait here, at most `timeout`. NCCL only makes
  // the stream wait on the operation's event and returns at once: the host runs ahead to queue the
  // optimizer and the next step. A hang then surfaces in the hang watchdog or in a later wait().
  virtual void wait_stream(Millis timeout) { wait(timeout); }
  virtual Millis default_timeout() const { return Millis{300000}; }
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual std::string backend_name() const = 0;  // "mpi", "nccl", "thread": for messages and records
  // The default states nothing supported, matching the default operations below.
  virtual Capabilities capabilities() const { return {}; }
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual int local_rank() const { return rank(); }
  virtual int local_size() const { return world_size(); }

  // In place on a contiguous tensor (float32, float64, float16/bfloat16 where the backend can, int64
  // for counters). kAvg is sum then divide and needs a floating-point tensor.
  virtual std::shared_ptr<Work> allreduce(torch::Tensor& tensor, const AllreduceOptions& opts = {});
  virtual std::shared_ptr<Work> broadcast(torch::Tensor& tensor, const BroadcastOptions& opts = {});
  // `output` must be contiguous with world_size * input.numel() elements of input's dtype; rank r's
  // input lands at [r * input.numel(), (r + 1) * input.numel()).
  virtual std::shared_ptr<Work> allgather(const torch::Tensor& input, torch::Tensor& output,
                                          const AllgatherOptions& opts = {});
  virtual void barrier(Millis timeout = Millis{300000});

  // Default implementations throw CommError(backend_name(), rank(),
  // "<op> is not supported by the <backend> backend").
 protected:
  [[noreturn]] void unsupported(const std::string& op) const;
};

// A Work that is already complete (empty tensors, world size 1 shortcuts).
std::shared_ptr<Work> completed_work();

}  // namespace rx::comm
