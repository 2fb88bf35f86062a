#include "common/comm/hang/traced_communicator.h"

#include <thread>

namespace rx::comm::hang {

using Clock = std::chrono::steady_clock;

// ---- CollectiveTrace ------------------------------------------------------------------------------

int64_t CollectiveTrace::post(const std::string& kind, const std::string& what) {
  std::lock_guard lock(mu_);
  const int64_t seq = ++last_posted_;
  Entry e{CollectiveInfo{seq, kind, what, step_, phase_, bucket_, 0}, Clock::now()};
  bucket_ = -1;
  pending_.emplace(seq, e);
  last_ = e;
  return seq;
}

void CollectiveTrace::done(int64_t seq) {
  std::lock_guard lock(mu_);
  pending_.erase(seq);
  last_done_ = std::max(last_done_, seq);
}

void CollectiveTrace::set_step(int64_t step) {
  std::lock_guard lock(mu_);
  step_ = step;
}

void CollectiveTrace::set_phase(const std::string& phase) {
  std::lock_guard lock(mu_);
  phase_ = phase;
}

void CollectiveTrace::set_bucket(int bucket) {
  std::lock_guard lock(mu_);
  bucket_ = bucket;
}

void CollectiveTrace::snapshot(RankState& out) const {
  std::lock_guard lock(mu_);
  const auto now = Clock::now();
  auto aged = [&](const Entry& e) {
    CollectiveInfo c = e.info;
    c.age_s = std::chrono::duration<double>(now - e.posted).count();
    return c;
  };
  out.last_posted = last_posted_;
  out.last_done = last_done_;
  out.step = step_;
  out.phase = phase_;
  out.oldest_pending.reset();
  out.last.reset();
  if (!pending_.empty()) out.oldest_pending = aged(pending_.begin()->second);
  if (last_) out.last = aged(*last_);
}

void CollectiveTrace::trip(const std::string& message) {
  {
    std::lock_guard lock(mu_);
    if (tripped_.load()) return;
    trip_message_ = message;
  }
  tripped_.store(true, std::memory_order_release);
}

std::string CollectiveTrace::trip_message() const {
  std::lock_guard lock(mu_);
  return trip_message_;
}

// ---- TracedWork -----------------------------------------------------------------------------------

namespace {

class TracedWork : public Work {
 public:
  TracedWork(std::shared_ptr<Work> inner, std::shared_ptr<CollectiveTrace> trace, int64_t seq,
             std::string backend, int rank, std::string what)
      : inner_(std::move(inner)),
        trace_(std::move(trace)),
        seq_(seq),
        backend_(std::move(backend)),
        rank_(rank),
        what_(std::move(what)) {}

  bool is_completed() override {
    if (done_) return true;
    if (inner_->is_completed()) {
      done_ = true;
      trace_->done(seq_);
    }
    return done_;
  }

  // Same polling as the backends' own waits (spin 100 ms, then short sleeps), plus the trip flag.
  void wait(Millis timeout) override {
    const auto start = Clock::now();
    const auto deadline = start + timeout;
    const auto spin_until = start + Millis{100};
    while (!is_completed()) {
      if (trace_->tripped()) throw HangDetected(backend_, rank_, trace_->trip_message());
      const auto now = Clock::now();
      if (now >= deadline)
        throw CommError(backend_, rank_,
                        what_ + " (collective #" + std::to_string(seq_) + ") timed out after " +
                            std::to_string(timeout.count()) + " ms");
      if (now < spin_until)
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  void wait_stream(Millis timeout) override {
    if (trace_->tripped()) throw HangDetected(backend_, rank_, trace_->trip_message());
    inner_->wait_stream(timeout);
    is_completed();  // a host-side backend is done now; a stream-side one is marked done later
  }

  Millis default_timeout() const override { return inner_->default_timeout(); }

 private:
  std::shared_ptr<Work> inner_;
  std::shared_ptr<CollectiveTrace> trace_;
  int64_t seq_;
  std::string backend_;
  int rank_;
  std::string what_;
  bool done_ = false;
};

std::string elements(const char* op, int64_t n) {
  return std::string(op) + " of " + std::to_string(n) + " elements";
}

}  // namespace

// ---- TracedCommunicator ---------------------------------------------------------------------------

TracedCommunicator::TracedCommunicator(std::unique_ptr<Communicator> inner,
                                       std::shared_ptr<CollectiveTrace> trace)
    : inner_(std::move(inner)), trace_(std::move(trace)) {}

std::shared_ptr<Work> TracedCommunicator::traced(const std::string& kind, const std::string& what,
                                                 const std::function<std::shared_ptr<Work>()>& start) {
  if (trace_->tripped()) throw HangDetected(backend_name(), rank(), trace_->trip_message());
  const int64_t seq = trace_->post(kind, what);
  std::shared_ptr<Work> work;
  try {
    work = start();
  } catch (...) {
    trace_->done(seq);  // never posted: not pending either
    throw;
  }
  return std::make_shared<TracedWork>(std::move(work), trace_, seq, backend_name(), rank(), what);
}

std::shared_ptr<Work> TracedCommunicator::allreduce(torch::Tensor& tensor, const AllreduceOptions& opts) {
  return traced("allreduce", elements("allreduce", tensor.numel()),
                [&] { return inner_->allreduce(tensor, opts); });
}

std::shared_ptr<Work> TracedCommunicator::broadcast(torch::Tensor& tensor, const BroadcastOptions& opts) {
  return traced("broadcast",
                elements("broadcast", tensor.numel()) + " from rank " + std::to_string(opts.root),
                [&] { return inner_->broadcast(tensor, opts); });
}

std::shared_ptr<Work> TracedCommunicator::allgather(const torch::Tensor& input, torch::Tensor& output,
                                                    const AllgatherOptions& opts) {
  return traced("allgather", elements("allgather", input.numel()),
                [&] { return inner_->allgather(input, output, opts); });
}

// The backends' barrier blocks; it is rebuilt here as a tiny all-reduce so the wait is traced and
// interruptible like the others (same matching on every rank, since every rank goes through here).
void TracedCommunicator::barrier(Millis timeout) {
  auto token = torch::zeros({1}, torch::kInt32);
  traced("barrier", "barrier", [&] {
    return inner_->allreduce(token, {ReduceOp::kSum, timeout});
  })->wait(timeout);
}

// ---- annotations ----------------------------------------------------------------------------------

void mark_step(Communicator& comm, int64_t step) {
  if (auto* t = dynamic_cast<TracedCommunicator*>(&comm)) t->trace().set_step(step);
}
void mark_phase(Communicator& comm, const std::string& phase) {
  if (auto* t = dynamic_cast<TracedCommunicator*>(&comm)) t->trace().set_phase(phase);
}
void mark_bucket(Communicator& comm, int bucket) {
  if (auto* t = dynamic_cast<TracedCommunicator*>(&comm)) t->trace().set_bucket(bucket);
}

}  // namespace rx::comm::hang
