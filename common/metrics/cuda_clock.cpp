// The CUDA DeviceClock of common/metrics/phase_timer.h: timing events on the current stream.
#include "common/metrics/phase_timer.h"

#ifdef RX_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <string>

#include "common/util/error.h"
#endif

namespace rx::metrics {

#ifdef RX_WITH_CUDA
namespace {

void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("phase timer: ") + what + ": " + cudaGetErrorString(e));
}

class CudaClock : public DeviceClock {
 public:
  explicit CudaClock(int device) : device_(static_cast<c10::DeviceIndex>(device)) {}
  ~CudaClock() override {
    c10::cuda::CUDAGuard guard(device_);
    for (auto e : queue_) cudaEventDestroy(e);
    for (auto e : free_) cudaEventDestroy(e);
    if (last_) cudaEventDestroy(last_);
  }

  void mark() override {
    c10::cuda::CUDAGuard guard(device_);
    cudaEvent_t e = nullptr;
    if (!free_.empty()) {
      e = free_.back();
      free_.pop_back();
    } else {
      cuda_ok(cudaEventCreate(&e), "cudaEventCreate");  // default flags: timing enabled
    }
    cuda_ok(cudaEventRecord(e, c10::cuda::getCurrentCUDAStream(device_).stream()), "cudaEventRecord");
    queue_.push_back(e);
  }

  std::vector<double> resolve(bool wait) override {
    c10::cuda::CUDAGuard guard(device_);
    std::vector<double> out;
    while (!queue_.empty()) {
      cudaEvent_t e = queue_.front();
      if (wait) {
        cuda_ok(cudaEventSynchronize(e), "cudaEventSynchronize");
      } else {
        const cudaError_t q = cudaEventQuery(e);
        if (q == cudaErrorNotReady) {
          (void)cudaGetLastError();  // a status, not an error
          break;
        }
        cuda_ok(q, "cudaEventQuery");
      }
      float ms = 0;
      if (last_) cuda_ok(cudaEventElapsedTime(&ms, last_, e), "cudaEventElapsedTime");
      out.push_back(ms);
      if (last_) free_.push_back(last_);
      last_ = e;
      queue_.pop_front();
    }
    return out;
  }

 private:
  c10::DeviceIndex device_;
  std::deque<cudaEvent_t> queue_;  // recorded, not yet resolved, oldest first
  std::vector<cudaEvent_t> free_;  // resolved events for reuse
  cudaEvent_t last_ = nullptr;     // the newest resolved marker: the next interval starts here
};

}  // namespace

std::unique_ptr<DeviceClock> make_cuda_clock(int device) { return std::make_unique<CudaClock>(device); }
#else
std::unique_ptr<DeviceClock> make_cuda_clock(int) { return nullptr; }
#endif

}  // namespace rx::metrics
