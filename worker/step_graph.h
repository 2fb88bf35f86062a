#pragma once
// [Graphed step] training.cuda_graph: after a few eager steps, the training step's forward (with the
// loss) and its backward are captured once as two CUDA graphs, and every later step with the same
// batch shape replays them: two graph launches instead of one kernel launch per operation. On small
// images the host's launches can be what limits the GPU: resnext50_32x4d at 32x32 launches hundreds
// of small kernels a step, and its bf16 step (autocast adds a cast per weight) was slower than its
// fp32 step on an H200 (bench/README.md, "GPU check"). The captured graphs read fixed
// ("static") input tensors and write fixed outputs, so each step copies its batch into the inputs
// first.
//
// What makes this sound, and where the trainer relies on it:
// - Capture comes after eager warm-up steps, so cuDNN's autotuning, cuBLAS's workspace and the fused
//   optimizer's flat layout ([Flat groups]; it moves the parameters once, and a graph keeps the
//   addresses it was captured with) are settled first.
// - The default stream cannot be captured: from its construction on, the StepGraph puts the
//   trainer's thread on a stream of its own, so warm-up, capture, replays and evaluation share one
//   stream. Capture is in thread-local mode (the loader's threads keep pinning memory), with
//   autocast's weight-cast cache off: a cached cast would outlive the capture.
// - The reducer's hooks are silent during capture and do not run at all in a replay (no autograd),
//   so the gradients accumulate into the bucket buffers and Reducer::mark_all_ready() launches every
//   all-reduce after the backward graph (no overlap with backward: the price at world size > 1).
// - Gradients are zeroed outside the graphs with one fill per bucket (Reducer::zero_grads()).
// - A graph keeps the addresses it was captured with: before every replay the trainer checks that
//   no parameter, gradient or buffer has moved since ([Fixed addresses]), and fails the job if one has.
// - A failed capture is ended and reported as an Error naming training.cuda_graph.
// - The optimizer steps eagerly (a few operations per flat bucket), so the learning rate schedule,
//   Adam's step count and checkpoints work as before.
// A batch of another shape (an epoch's last, partial batch) runs the eager step.
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace rx::worker {

// [Fixed addresses] What a captured graph reads and writes in place, with the addresses it had at
// capture. check() runs before every replay, so it compares pointers only: it keeps the tensors'
// handles and names from the capture rather than asking the model again, which builds every name
// anew. Kept handles see every move this program makes, because the flat optimizer layout and
// checkpoint loading move a parameter's or buffer's data in place (set_data(), set_()), and a
// gradient is read through its parameter each time. Device-agnostic, so it is tested on CPUs.
class FixedAddresses {
 public:
  void add_parameter(std::string name, const torch::Tensor& parameter);  // it and its .grad
  void add_buffer(std::string name, const torch::Tensor& buffer);
  size_t size() const { return entries_.size(); }
  // Throws an Error naming the first tensor whose memory is not where it was when added.
  void check() const;

 private:
  struct Entry {
    std::string name;
    torch::Tensor tensor;
    bool grad;  // the address is that of tensor.grad()
    const void* address;
  };
  std::vector<Entry> entries_;
};

class StepGraph {
 public:
  struct Outputs {
    torch::Tensor loss;    // fp32 batch mean, what backward starts from
    torch::Tensor logits;  // for the step's accuracy count
  };
  using Forward = std::function<Outputs(const torch::Tensor& images, const torch::Tensor& labels)>;
  using Backward = std::function<void(const torch::Tensor& loss)>;

  // Throws ConfigError naming training.cuda_graph unless this is a CUDA build and `device` a CUDA
  // device. Until destroyed, the calling thread's current device is `device` and its current stream
  // there a side stream (ordered after the previous one's work; the previous one after it, at the end).
  explicit StepGraph(const torch::Device& device);
  ~StepGraph();
  StepGraph(const StepGraph&) = delete;
  StepGraph& operator=(const StepGraph&) = delete;

  bool captured() const;
  // Whether a batch with these sizes, strides and dtypes can replay the captured graphs.
  bool fits(const torch::Tensor& images, const torch::Tensor& labels) const;
  // Copies the batch into new static inputs and captures `forward` and `backward` on them (on the
  // thread that built the StepGraph). Nothing runs on the device: replay both next. A failed capture
  // is ended and throws an Error naming training.cuda_graph.
  // `fixed`: the tensors the graphs use in place (parameters, gradients, buffers), as they are now.
  void capture(const torch::Tensor& images, const torch::Tensor& labels, const Forward& forward,
               const Backward& backward, FixedAddresses fixed);
  // Throws an Error naming the first of the fixed tensors whose memory moved since the capture: a
  // replay would read or write its old memory.
  void check_fixed() const;
  // Copies a batch (pinned host memory) into the static inputs, asynchronously on the current stream.
  void load(const torch::Tensor& images, const torch::Tensor& labels);
  void replay_forward();
  void replay_backward();
  const Outputs& outputs() const;
  const torch::Tensor& labels() const;  // the static labels, as the outputs saw them

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rx::worker
