#include "worker/step_graph.h"

#include "common/util/error.h"

#ifdef RX_WITH_CUDA
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

#include <string>
#include <utility>

namespace rx::worker {

namespace {
bool same_layout(const torch::Tensor& a, const torch::Tensor& b) {
  return a.defined() && a.sizes() == b.sizes() && a.strides() == b.strides() && a.dtype() == b.dtype();
}
const void* address(const torch::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }
}  // namespace

void FixedAddresses::add_parameter(std::string name, const torch::Tensor& parameter) {
  entries_.push_back({name, parameter, false, address(parameter)});
  entries_.push_back({std::move(name) + ".grad", parameter, true, address(parameter.grad())});
}

void FixedAddresses::add_buffer(std::string name, const torch::Tensor& buffer) {
  entries_.push_back({std::move(name), buffer, false, address(buffer)});
}

void FixedAddresses::check() const {
  for (const auto& e : entries_)
    if (address(e.grad ? e.tensor.grad() : e.tensor) != e.address)
      throw Error("training.cuda_graph: " + e.name +
                  " moved after the step was captured (the graphs would use its old memory)");
}

#ifdef RX_WITH_CUDA

namespace {
// Orders `after` behind the work queued so far on `before`. Never throws: it also runs in a
// destructor, possibly after a CUDA error, when the job is failing anyway.
void order_streams(cudaStream_t before, cudaStream_t after) noexcept {
  cudaEvent_t e = nullptr;
  if (cudaEventCreateWithFlags(&e, cudaEventDisableTiming) == cudaSuccess) {
    if (cudaEventRecord(e, before) == cudaSuccess) (void)cudaStreamWaitEvent(after, e, 0);
    (void)cudaEventDestroy(e);
  }
  (void)cudaGetLastError();
}
}  // namespace

// The default stream cannot be captured, so from construction on this thread works on `device` and
// on a stream of its own (ordered after the previous stream's work, and that one after it at the
// end): the warm-up steps, the capture and every replay share one stream, as CUDA graphs ask.
struct StepGraph::Impl {
  explicit Impl(const torch::Device& d)
      : device(d),
        previous_device(c10::cuda::current_device()),
        previous(c10::cuda::getCurrentCUDAStream(d.index())),
        stream(c10::cuda::getStreamFromPool(false, d.index())),
        pool(at::cuda::graph_pool_handle()) {
    c10::cuda::set_device(d.index());
    order_streams(previous.stream(), stream.stream());
    c10::cuda::setCurrentCUDAStream(stream);
  }
  ~Impl() {
    order_streams(stream.stream(), previous.stream());
    c10::cuda::setCurrentCUDAStream(previous);
    (void)cudaSetDevice(previous_device);
  }
  // After a failed capture: ends it (discarding the partial graph) and stops the caching allocator
  // from serving this stream out of the graphs' pool, so that the error can be reported normally.
  void abandon_capture() noexcept {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream.stream(), &status) == cudaSuccess &&
        status != cudaStreamCaptureStatusNone) {
      cudaGraph_t partial = nullptr;
      if (cudaStreamEndCapture(stream.stream(), &partial) == cudaSuccess && partial)
        (void)cudaGraphDestroy(partial);
      try {  // capture_begin's beginAllocateToPool, undone; the pool goes once no graph uses it
        c10::cuda::CUDACachingAllocator::endAllocateToPool(device.index(), pool);
        c10::cuda::CUDACachingAllocator::releasePool(device.index(), pool);
      } catch (...) {  // not capturing into the pool after all
      }
    }
    (void)cudaGetLastError();
  }

  torch::Device device;
  c10::DeviceIndex previous_device;
  c10::cuda::CUDAStream previous, stream;
  c10::MempoolId_t pool;         // shared by both graphs: they replay in the order they were captured
  torch::Tensor images, labels;  // the static inputs
  Outputs outputs;
  at::cuda::CUDAGraph forward, backward;
  FixedAddresses fixed;  // what must keep its address
  bool captured = false;
};

StepGraph::StepGraph(const torch::Device& device) {
  if (!device.is_cuda())
    throw ConfigError("training.cuda_graph",
                      "needs a CUDA device (training runs on " + device.str() + "); set it to false");
  impl_ = std::make_unique<Impl>(device);
}

void StepGraph::capture(const torch::Tensor& images, const torch::Tensor& labels, const Forward& forward,
                        const Backward& backward, FixedAddresses fixed) {
  auto& m = *impl_;
  RX_CHECK(!m.captured, "the training step is captured once");
  RX_CHECK(c10::cuda::getCurrentCUDAStream(m.device.index()) == m.stream,
           "capture on the thread that built the StepGraph");
  auto on_device = [&](const torch::Tensor& t) {
    return torch::empty_strided(t.sizes(), t.strides(), t.options().device(m.device));
  };
  m.images = on_device(images);
  m.labels = on_device(labels);
  load(images, labels);
  m.fixed = std::move(fixed);
  // As torch.cuda.graph does: the warm-up's cached blocks go back to the device first, so the
  // graphs' private pool does not come on top of them.
  c10::cuda::device_synchronize();
  c10::cuda::CUDACachingAllocator::emptyCache();
  const bool cache = at::autocast::is_autocast_cache_enabled();
  at::autocast::set_autocast_cache_enabled(false);
  try {
    m.forward.capture_begin(m.pool, cudaStreamCaptureModeThreadLocal);
    m.outputs = forward(m.images, m.labels);
    m.forward.capture_end();
    m.backward.capture_begin(m.pool, cudaStreamCaptureModeThreadLocal);
    backward(m.outputs.loss);
    m.backward.capture_end();
  } catch (const std::exception& e) {
    m.abandon_capture();
    at::autocast::set_autocast_cache_enabled(cache);
    throw Error(std::string("training.cuda_graph: capturing the training step failed: ") + e.what());
  }
  at::autocast::set_autocast_cache_enabled(cache);
  m.captured = true;
}

void StepGraph::check_fixed() const { impl_->fixed.check(); }

void StepGraph::replay_forward() { impl_->forward.replay(); }
void StepGraph::replay_backward() { impl_->backward.replay(); }

#else

struct StepGraph::Impl {
  torch::Tensor images, labels;
  Outputs outputs;
  bool captured = false;
};

StepGraph::StepGraph(const torch::Device& device) {
  throw ConfigError("training.cuda_graph",
                    "needs a CUDA build of resnext_worker (this one is CPU-only; "
                    "training runs on " +
                        device.str() + "); set it to false");
}

void StepGraph::capture(const torch::Tensor&, const torch::Tensor&, const Forward&, const Backward&,
                        FixedAddresses) {
  throw Error("training.cuda_graph: no CUDA in this build");
}
void StepGraph::check_fixed() const {}
void StepGraph::replay_forward() { throw Error("training.cuda_graph: no CUDA in this build"); }
void StepGraph::replay_backward() { throw Error("training.cuda_graph: no CUDA in this build"); }

#endif

StepGraph::~StepGraph() = default;

bool StepGraph::captured() const { return impl_->captured; }

bool StepGraph::fits(const torch::Tensor& images, const torch::Tensor& labels) const {
  return same_layout(impl_->images, images) && same_layout(impl_->labels, labels);
}

void StepGraph::load(const torch::Tensor& images, const torch::Tensor& labels) {
  RX_CHECK(fits(images, labels), "a batch of another shape cannot replay the captured step");
  impl_->images.copy_(images, /*non_blocking=*/true);
  impl_->labels.copy_(labels, true);
}

const StepGraph::Outputs& StepGraph::outputs() const { return impl_->outputs; }
const torch::Tensor& StepGraph::labels() const { return impl_->labels; }

}  // namespace rx::worker
