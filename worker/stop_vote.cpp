#include "worker/stop_vote.h"

#include <spdlog/spdlog.h>

#include "common/util/error.h"

namespace rx::worker {

StopVote::StopVote(comm::Communicator* host, comm::Millis timeout) : host_(host), timeout_(timeout) {
  RX_CHECK(!host || host->capabilities().device == c10::DeviceType::CPU,
           "the stop vote needs a host communicator, got " << host->backend_name());
}

StopVote::~StopVote() {
  // Reached with a vote in flight only when training ended by an exception (finish() was not
  // called): the job is being aborted, and waiting here would only delay that by up to the timeout.
  // The Work keeps its buffer alive until it is dropped.
  if (pending_) spdlog::debug("stop vote dropped unfinished: the rank is failing");
}

void StopVote::finish() {
  if (!pending_) return;
  const auto vote = std::move(pending_);  // taken first: a timeout below leaves nothing to wait for again
  vote->wait(timeout_);
}

bool StopVote::next(int64_t signal) {
  if (!host_) return signal != 0;
  if (pending_) {
    const auto vote = std::move(pending_);
    vote->wait(timeout_);
    if (flag_.item<int64_t>() != 0) return true;
  }
  flag_ = torch::tensor({signal}, torch::kInt64);
  pending_ = host_->allreduce(flag_, {comm::ReduceOp::kMax, timeout_});
  return false;
}

}  // namespace rx::worker
