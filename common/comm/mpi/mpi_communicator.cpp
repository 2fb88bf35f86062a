#include "common/comm/mpi/mpi_communicator.h"

#include <climits>
#include <functional>
#include <thread>
#include <utility>
#include <vector>

#include "common/comm/mpi/mpi_check.h"
#include "common/comm/tensor_checks.h"
#include "common/util/error.h"

namespace rx::comm {

// ---- MpiRuntime ---------------------------------------------------------------------------------

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  int initialised = 0;
  RX_MPI_CHECK(MPI_Initialized(&initialised));
  if (initialised) {
    RX_MPI_CHECK(MPI_Query_thread(&provided_));
  } else {
    RX_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided_));
    owns_ = true;
  }
  if (provided_ < MPI_THREAD_SERIALIZED) {
    throw CommError(
        "mpi", detail::mpi_world_rank_or_minus1(),
        "MPI offers thread level " + std::to_string(provided_) + ", need MPI_THREAD_SERIALIZED or better");
  }
}

MpiRuntime::~MpiRuntime() {
  if (!owns_) return;
  int finalised = 0;
  MPI_Finalized(&finalised);
  if (!finalised) MPI_Finalize();
}

void MpiRuntime::abort(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::abort();  // MPI_Abort should not return; make sure we do not either.
}

namespace {

// ---- dtype / op mapping -------------------------------------------------------------------------

// Datatype for reductions: only types MPI can add. float16/bfloat16 have no MPI type.
MPI_Datatype reduce_type(const OpContext& ctx, c10::ScalarType t) {
  switch (t) {
    case c10::kFloat:
      return MPI_FLOAT;
    case c10::kDouble:
      return MPI_DOUBLE;
    case c10::kLong:
      return MPI_INT64_T;
    case c10::kInt:
      return MPI_INT32_T;
    default:
      throw CommError(
          ctx.backend, ctx.rank,
          std::string(ctx.op) + " of " + c10::toString(t) + " is not supported by the mpi backend");
  }
}

// Datatype for data movement (broadcast, allgather): any element of 1, 2, 4 or 8 bytes.
MPI_Datatype move_type(const OpContext& ctx, const torch::Tensor& t) {
  switch (t.element_size()) {
    case 1:
      return MPI_UINT8_T;
    case 2:
      return MPI_UINT16_T;
    case 4:
      return MPI_UINT32_T;
    case 8:
      return MPI_UINT64_T;
    default:
      throw CommError(ctx.backend, ctx.rank,
                      std::string(ctx.op) + " of " + c10::toString(t.scalar_type()) +
                          " is not supported by the mpi backend");
  }
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      return MPI_SUM;
    case ReduceOp::kMax:
      return MPI_MAX;
    case ReduceOp::kMin:
      return MPI_MIN;
  }
  return MPI_SUM;
}

int checked_count(const OpContext& ctx, int64_t numel) {
  if (numel > INT_MAX) {
    throw CommError(
        ctx.backend, ctx.rank,
        std::string(ctx.op) + " of " + std::to_string(numel) + " elements exceeds MPI's int count");
  }
  return static_cast<int>(numel);
}

// ---- MpiWork --------------------------------------------------------------------------------------

// [Non-blocking + polling] Every operation is posted with an MPI_I* call and completed by polling
// MPI_Test against a deadline. A blocking MPI_Allreduce cannot be interrupted, so a dead or
// diverged peer would hang the job forever; polling lets wait() give up with a CommError naming
// this rank. MPI_Test is also what drives Open MPI's progress engine for non-blocking collectives
// (libnbc), so the loop spins (yielding the core, which matters on an oversubscribed node) for the
// first 100 ms and only then backs off to short sleeps: long waits are stragglers, not bandwidth.
class MpiWork : public Work {
 public:
  MpiWork(MPI_Request request, int rank, std::string what, std::vector<torch::Tensor> keep_alive,
          std::function<void()> on_complete, Millis default_timeout)
      : request_(request),
        rank_(rank),
        what_(std::move(what)),
        keep_alive_(std::move(keep_alive)),
        on_complete_(std::move(on_complete)),
        default_timeout_(default_timeout) {}

  ~MpiWork() override {
    if (done_) return;
    // Still pending (the caller gave up after a timeout and is about to abort). MPI may yet write
    // into the buffers, so they must outlive us: leak them on purpose.
    new std::vector<torch::Tensor>(std::move(keep_alive_));
  }

  bool is_completed() override {
    if (done_) return true;
    int flag = 0;
    RX_MPI_CHECK(MPI_Test(&request_, &flag, MPI_STATUS_IGNORE));
    if (flag) {
      done_ = true;
      if (on_complete_) on_complete_();
      keep_alive_.clear();
    }
    return done_;
  }

  void wait(Millis timeout) override {
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    const auto deadline = start + timeout;
    const auto spin_until = start + Millis{100};
    while (!is_completed()) {
      const auto now = Clock::now();
      if (now >= deadline) {
        throw CommError("mpi", rank_, what_ + " timed out after " + std::to_string(timeout.count()) + " ms");
      }
      if (now < spin_until) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
    }
  }

  Millis default_timeout() const override { return default_timeout_; }

 private:
  MPI_Request request_;
  int rank_;
  std::string what_;  // "allreduce of N elements"
  std::vector<torch::Tensor> keep_alive_;
  std::function<void()> on_complete_;
  Millis default_timeout_;
  bool done_ = false;
};

std::string describe(const char* op, int64_t numel) {
  return std::string(op) + " of " + std::to_string(numel) + " elements";
}

// ---- MpiCommunicator ------------------------------------------------------------------------------

class MpiCommunicator : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm parent) {
    RX_MPI_CHECK(MPI_Comm_dup(parent, &comm_));
    RX_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    RX_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    RX_MPI_CHECK(MPI_Comm_size(comm_, &world_));
    MPI_Comm local = MPI_COMM_NULL;
    RX_MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local));
    RX_MPI_CHECK(MPI_Comm_rank(local, &local_rank_));
    RX_MPI_CHECK(MPI_Comm_size(local, &local_size_));
    RX_MPI_CHECK(MPI_Comm_free(&local));
  }

  ~MpiCommunicator() override {
    int finalised = 0;
    MPI_Finalized(&finalised);
    // Freeing with operations still pending is legal: MPI defers the free until they complete.
    if (!finalised && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  }

  std::string backend_name() const override { return "mpi"; }
  // The types reduce_type() maps: MPI has no float16/bfloat16 reduction.
  Capabilities capabilities() const override {
    Capabilities c;
    c.allreduce_dtypes = {c10::kFloat, c10::kDouble, c10::kLong, c10::kInt};
    c.reduce_ops = {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin};
    c.device = c10::DeviceType::CPU;
    return c;
  }
  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }

  std::shared_ptr<Work> allreduce(torch::Tensor& tensor, const AllreduceOptions& opts) override {
    const OpContext ctx{"mpi", rank_, "allreduce"};
    check_tensor(ctx, tensor, /*cpu=*/true);
    check_reduce_op(ctx, tensor, opts.op);
    const MPI_Datatype type = reduce_type(ctx, tensor.scalar_type());
    const int count = checked_count(ctx, tensor.numel());
    if (count == 0) return completed_work();
    MPI_Request req = MPI_REQUEST_NULL;
    RX_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, tensor.data_ptr(), count, type, mpi_op(opts.op), comm_, &req));
    std::function<void()> finish;
    if (opts.op == ReduceOp::kAvg) {
      finish = [t = tensor, world = world_]() mutable { t.div_(world); };
    }
    return std::make_shared<MpiWork>(req, rank_, describe(ctx.op, count), std::vector<torch::Tensor>{tensor},
                                     std::move(finish), opts.timeout);
  }

  std::shared_ptr<Work> broadcast(torch::Tensor& tensor, const BroadcastOptions& opts) override {
    const OpContext ctx{"mpi", rank_, "broadcast"};
    check_tensor(ctx, tensor, /*cpu=*/true);
    check_root(ctx, opts.root, world_);
    const MPI_Datatype type = move_type(ctx, tensor);
    const int count = checked_count(ctx, tensor.numel());
    if (count == 0) return completed_work();
    MPI_Request req = MPI_REQUEST_NULL;
    RX_MPI_CHECK(MPI_Ibcast(tensor.data_ptr(), count, type, opts.root, comm_, &req));
    return std::make_shared<MpiWork>(req, rank_, describe(ctx.op, count), std::vector<torch::Tensor>{tensor},
                                     nullptr, opts.timeout);
  }

  std::shared_ptr<Work> allgather(const torch::Tensor& input, torch::Tensor& output,
                                  const AllgatherOptions& opts) override {
    const OpContext ctx{"mpi", rank_, "allgather"};
    check_tensor(ctx, input, /*cpu=*/true);
    check_tensor(ctx, output, /*cpu=*/true);
    check_allgather_output(ctx, input, output, world_);
    const MPI_Datatype type = move_type(ctx, input);
    const int count = checked_count(ctx, input.numel());
    checked_count(ctx, output.numel());
    if (count == 0) return completed_work();
    MPI_Request req = MPI_REQUEST_NULL;
    RX_MPI_CHECK(MPI_Iallgather(input.data_ptr(), count, type, output.data_ptr(), count, type, comm_, &req));
    return std::make_shared<MpiWork>(req, rank_, describe(ctx.op, count),
                                     std::vector<torch::Tensor>{input, output}, nullptr, opts.timeout);
  }

  void barrier(Millis timeout) override {
    MPI_Request req = MPI_REQUEST_NULL;
    RX_MPI_CHECK(MPI_Ibarrier(comm_, &req));
    MpiWork(req, rank_, "barrier", {}, nullptr, timeout).wait(timeout);
  }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int world_ = 1;
  int local_rank_ = 0;
  int local_size_ = 1;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm comm) {
  if (detail::mpi_world_rank_or_minus1() < 0) {
    throw CommError("mpi", -1, "MPI is not initialised (create an rx::comm::MpiRuntime first)");
  }
  return std::make_unique<MpiCommunicator>(comm);
}

}  // namespace rx::comm
