#include "common/comm/staging.h"

#include <utility>

namespace rx::comm {
namespace {

// Completes the inner operation on the staged copy, then writes the result into the caller's tensor.
class StagedWork : public Work {
 public:
  StagedWork(std::shared_ptr<Work> inner, torch::Tensor staged, torch::Tensor target)
      : inner_(std::move(inner)), staged_(std::move(staged)), target_(std::move(target)) {}

  bool is_completed() override {
    if (!done_ && inner_->is_completed()) finish();
    return done_;
  }
  void wait(Millis timeout) override {
    if (done_) return;
    inner_->wait(timeout);
    finish();
  }
  Millis default_timeout() const override { return inner_->default_timeout(); }

 private:
  void finish() {
    // Synchronous (pageable host memory on one side): the staged copy may be freed afterwards. A
    // completed NCCL Work has already ordered the current stream after the collective.
    target_.copy_(staged_);
    done_ = true;
  }
  std::shared_ptr<Work> inner_;
  torch::Tensor staged_, target_;
  bool done_ = false;
};

class StagingCommunicator : public Communicator {
 public:
  StagingCommunicator(std::unique_ptr<Communicator> inner, torch::Device device)
      : inner_(std::move(inner)), device_(device) {}

  std::string backend_name() const override { return inner_->backend_name(); }
  Capabilities capabilities() const override {
    Capabilities c = inner_->capabilities();
    c.staged = true;
    return c;
  }
  int rank() const override { return inner_->rank(); }
  int world_size() const override { return inner_->world_size(); }
  int local_rank() const override { return inner_->local_rank(); }
  int local_size() const override { return inner_->local_size(); }

  std::shared_ptr<Work> allreduce(torch::Tensor& tensor, const AllreduceOptions& opts) override {
    if (!elsewhere(tensor)) return inner_->allreduce(tensor, opts);
    torch::Tensor copy = stage(tensor);
    return staged(inner_->allreduce(copy, opts), copy, tensor);
  }
  std::shared_ptr<Work> broadcast(torch::Tensor& tensor, const BroadcastOptions& opts) override {
    if (!elsewhere(tensor)) return inner_->broadcast(tensor, opts);
    torch::Tensor copy = stage(tensor);
    return staged(inner_->broadcast(copy, opts), copy, tensor);
  }
  std::shared_ptr<Work> allgather(const torch::Tensor& input, torch::Tensor& output,
                                  const AllgatherOptions& opts) override {
    if (!elsewhere(input) && !elsewhere(output)) return inner_->allgather(input, output, opts);
    torch::Tensor out = torch::empty(output.sizes(), output.options().device(device_));
    return staged(inner_->allgather(stage(input), out, opts), out, output);
  }
  void barrier(Millis timeout) override { inner_->barrier(timeout); }

 private:
  bool elsewhere(const torch::Tensor& t) const { return t.defined() && t.device() != device_; }
  // The inner backend checks shape, dtype and contiguity on the staged copy and names itself.
  torch::Tensor stage(const torch::Tensor& t) const {
    return t.to(device_, /*non_blocking=*/false, /*copy=*/true);
  }
  static std::shared_ptr<Work> staged(std::shared_ptr<Work> inner, torch::Tensor host, torch::Tensor device) {
    return std::make_shared<StagedWork>(std::move(inner), std::move(host), std::move(device));
  }

  std::unique_ptr<Communicator> inner_;
  torch::Device device_;
};

}  // namespace

std::unique_ptr<Communicator> stage_through(std::unique_ptr<Communicator> inner,
                                            torch::Device backend_device) {
  return std::make_unique<StagingCommunicator>(std::move(inner), backend_device);
}

}  // namespace rx::comm
