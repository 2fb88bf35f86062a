#ifdef RX_WITH_CUDA

#include "common/comm/nccl/nccl_communicator.h"

#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "common/comm/mpi/mpi_communicator.h"
#include "common/comm/nccl/nccl_check.h"
#include "common/comm/tensor_checks.h"
#include "common/util/error.h"

namespace rx::comm {
namespace {

using detail::NcclHandle;

ncclDataType_t nccl_type(const OpContext& ctx, c10::ScalarType t) {
  switch (t) {
    case c10::kFloat:
      return ncclFloat32;
    case c10::kDouble:
      return ncclFloat64;
    case c10::kHalf:
      return ncclFloat16;
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 10, 0)
    case c10::kBFloat16:
      return ncclBfloat16;
#endif
    case c10::kLong:
      return ncclInt64;
    case c10::kInt:
      return ncclInt32;
    case c10::kChar:
      return ncclInt8;
    case c10::kByte:
      return ncclUint8;
    default:
      throw CommError(
          ctx.backend, ctx.rank,
          std::string(ctx.op) + " of " + c10::toString(t) + " is not supported by the nccl backend");
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kAvg:
      return ncclAvg;  // NCCL >= 2.10
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kMin:
      return ncclMin;
  }
  return ncclSum;
}

class NcclWork : public Work {
 public:
  NcclWork(std::shared_ptr<NcclHandle> handle, std::shared_ptr<at::cuda::CUDAEvent> done,
           c10::DeviceIndex device, std::string what, std::vector<torch::Tensor> keep_alive,
           Millis default_timeout)
      : handle_(std::move(handle)),
        done_event_(std::move(done)),
        device_(device),
        what_(std::move(what)),
        keep_alive_(std::move(keep_alive)),
        default_timeout_(default_timeout) {}

  bool is_completed() override {
    if (completed_) return true;
    check_async();
    const cudaError_t e = cudaEventQuery(done_event_->event());
    if (e == cudaErrorNotReady) {
      (void)cudaGetLastError();  // NotReady is a status, not an error: clear it.
      return false;
    }
    RX_CUDA_CHECK(e, handle_.get());
    completed_ = true;
    // Later work on the caller's stream must see the result.
    done_event_->block(c10::cuda::getCurrentCUDAStream(device_));
    keep_alive_.clear();
    return true;
  }

  void wait(Millis timeout) override {
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    const auto deadline = start + timeout;
    while (!is_completed()) {
      const auto now = Clock::now();
      if (now >= deadline) {
        handle_->abort();
        throw CommError(
            "nccl", handle_->rank,
            what_ + " timed out after " + std::to_string(timeout.count()) + " ms; communicator aborted");
      }
      if (now < start + Millis{100}) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
    }
  }

  void wait_stream(Millis) override {
    if (completed_) return;  // is_completed() has ordered the caller's stream already
    check_async();
    done_event_->block(c10::cuda::getCurrentCUDAStream(device_));
  }

  Millis default_timeout() const override { return default_timeout_; }

 private:
  void check_async() {
    if (handle_->comm == nullptr) {
      throw CommError("nccl", handle_->rank,
                      what_ + ": the communicator was aborted after an earlier failure");
    }
    ncclResult_t async = ncclSuccess;
    RX_NCCL_CHECK(ncclCommGetAsyncError(handle_->comm, &async), handle_.get());
    if (async != ncclSuccess)
      detail::nccl_failed(handle_.get(), what_ + " (async)", ncclGetErrorString(async));
  }

  std::shared_ptr<NcclHandle> handle_;
  std::shared_ptr<at::cuda::CUDAEvent> done_event_;
  c10::DeviceIndex device_;
  std::string what_;
  std::vector<torch::Tensor> keep_alive_;
  Millis default_timeout_;
  bool completed_ = false;
};

class NcclCommunicator : public Communicator {
 public:
  explicit NcclCommunicator(MPI_Comm parent) : mpi_(make_mpi_communicator(parent)) {
    handle_ = std::make_shared<NcclHandle>();
    handle_->rank = mpi_->rank();
    int count = 0;
    RX_CUDA_CHECK(cudaGetDeviceCount(&count), nullptr);
    if (mpi_->local_rank() >= count) {
      throw CommError("nccl", rank(),
                      "local rank " + std::to_string(mpi_->local_rank()) +
                          " needs cuda:" + std::to_string(mpi_->local_rank()) + " but only " +
                          std::to_string(count) + " CUDA devices are visible");
    }
    device_ = static_cast<c10::DeviceIndex>(mpi_->local_rank());
    c10::cuda::set_device(device_);

    ncclUniqueId id{};
    if (rank() == 0) RX_NCCL_CHECK(ncclGetUniqueId(&id), nullptr);
    torch::Tensor id_bytes = torch::from_blob(&id, {static_cast<int64_t>(sizeof(id))}, torch::kUInt8);
    mpi_->broadcast(id_bytes, BroadcastOptions{0, Millis{300000}})->wait();
    ncclComm_t comm = nullptr;
    RX_NCCL_CHECK(ncclCommInitRank(&comm, world_size(), id, rank()), nullptr);
    handle_->comm = comm;
    stream_.emplace(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device_));
  }

  // Abort rather than destroy: ncclCommAbort never blocks on unfinished operations. Callers wait
  // for their Work before tearing down, so nothing useful is lost.
  ~NcclCommunicator() override { handle_->abort(); }

  std::string backend_name() const override { return "nccl"; }
  // The types nccl_type() maps.
  Capabilities capabilities() const override {
    Capabilities c;
    c.allreduce_dtypes = {c10::kFloat, c10::kDouble, c10::kHalf, c10::kLong,
                          c10::kInt,   c10::kChar,   c10::kByte};
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 10, 0)
    c.allreduce_dtypes.push_back(c10::kBFloat16);
#endif
    c.reduce_ops = {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin};
    c.device = c10::DeviceType::CUDA;
    return c;
  }
  int rank() const override { return mpi_->rank(); }
  int world_size() const override { return mpi_->world_size(); }
  int local_rank() const override { return mpi_->local_rank(); }
  int local_size() const override { return mpi_->local_size(); }

  std::shared_ptr<Work> allreduce(torch::Tensor& tensor, const AllreduceOptions& opts) override {
    const OpContext ctx{"nccl", rank(), "allreduce"};
    check(ctx, tensor);
    check_reduce_op(ctx, tensor, opts.op);
    const ncclDataType_t type = nccl_type(ctx, tensor.scalar_type());
    const size_t count = static_cast<size_t>(tensor.numel());
    return enqueue(ctx, count, {tensor}, opts.timeout, [&](ncclComm_t comm, cudaStream_t s) {
      void* p = tensor.data_ptr();
      RX_NCCL_CHECK(ncclAllReduce(p, p, count, type, nccl_op(opts.op), comm, s), handle_.get());
    });
  }

  std::shared_ptr<Work> broadcast(torch::Tensor& tensor, const BroadcastOptions& opts) override {
    const OpContext ctx{"nccl", rank(), "broadcast"};
    check(ctx, tensor);
    check_root(ctx, opts.root, world_size());
    const size_t bytes = tensor.nbytes();
    return enqueue(ctx, tensor.numel(), {tensor}, opts.timeout, [&](ncclComm_t comm, cudaStream_t s) {
      void* p = tensor.data_ptr();
      RX_NCCL_CHECK(ncclBroadcast(p, p, bytes, ncclUint8, opts.root, comm, s), handle_.get());
    });
  }

  std::shared_ptr<Work> allgather(const torch::Tensor& input, torch::Tensor& output,
                                  const AllgatherOptions& opts) override {
    const OpContext ctx{"nccl", rank(), "allgather"};
    check(ctx, input);
    check(ctx, output);
    check_allgather_output(ctx, input, output, world_size());
    const size_t bytes = input.nbytes();
    return enqueue(ctx, input.numel(), {input, output}, opts.timeout, [&](ncclComm_t comm, cudaStream_t s) {
      RX_NCCL_CHECK(ncclAllGather(input.data_ptr(), output.data_ptr(), bytes, ncclUint8, comm, s),
                    handle_.get());
    });
  }

  // NCCL has no barrier: allreduce one element and wait for it (as c10d does).
  void barrier(Millis timeout) override {
    torch::Tensor one = torch::zeros({1}, torch::TensorOptions().device(torch::kCUDA, device_));
    allreduce(one, AllreduceOptions{ReduceOp::kSum, timeout})->wait(timeout);
  }

 private:
  void check(const OpContext& ctx, const torch::Tensor& t) const {
    check_tensor(ctx, t, /*cpu=*/false);
    if (!t.is_cuda() || t.device().index() != device_) {
      throw CommError("nccl", rank(),
                      std::string(ctx.op) + ": tensor is on " + t.device().str() +
                          ", this rank's NCCL device is cuda:" + std::to_string(device_));
    }
  }

  template <typename Launch>
  std::shared_ptr<Work> enqueue(const OpContext& ctx, int64_t numel, std::vector<torch::Tensor> tensors,
                                Millis timeout, Launch&& launch) {
    if (handle_->comm == nullptr) {
      throw CommError("nccl", rank(),
                      std::string(ctx.op) + ": the communicator was aborted after an earlier failure");
    }
    if (numel == 0) return completed_work();
    c10::cuda::CUDAGuard guard(device_);
    // The NCCL stream must not read the tensors before the compute stream has produced them.
    at::cuda::CUDAEvent ready;
    ready.record(c10::cuda::getCurrentCUDAStream(device_));
    ready.block(*stream_);
    launch(handle_->comm, stream_->stream());
    // Keep the caching allocator from handing these blocks out before NCCL is done with them.
    for (const auto& t : tensors)
      c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(), *stream_);
    auto done = std::make_shared<at::cuda::CUDAEvent>();
    done->record(*stream_);
    return std::make_shared<NcclWork>(handle_, std::move(done), device_,
                                      std::string(ctx.op) + " of " + std::to_string(numel) + " elements",
                                      std::move(tensors), timeout);
  }

  std::unique_ptr<Communicator> mpi_;  // bootstrap and rank/local-rank bookkeeping
  std::shared_ptr<NcclHandle> handle_;
  c10::DeviceIndex device_ = 0;
  std::optional<c10::cuda::CUDAStream> stream_;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm comm) {
  return std::make_unique<NcclCommunicator>(comm);
}

}  // namespace rx::comm

#endif  // RX_WITH_CUDA
