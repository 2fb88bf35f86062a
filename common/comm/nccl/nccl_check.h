#pragma once
// [RX_NCCL_CHECK / RX_CUDA_CHECK] Wrap every NCCL and CUDA call of the nccl backend. On failure
// they abort the NCCL communicator first (a failed or half-done collective leaves peers blocked in
// kernels; aborting is the only way to release them and our own stream) and then throw
// CommError("nccl", rank, "<call> failed: <error string>"). CUDA builds only.
#ifdef RX_WITH_CUDA

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <string>

#include "common/util/error.h"

namespace rx::comm::detail {

// The communicator a failing check aborts; shared by the communicator and its Work handles.
struct NcclHandle {
  ncclComm_t comm = nullptr;
  int rank = -1;
  void abort() noexcept {
    if (comm != nullptr) {
      ncclCommAbort(comm);
      comm = nullptr;
    }
  }
};

[[noreturn]] inline void nccl_failed(NcclHandle* handle, const std::string& what, const std::string& error) {
  std::string msg = what + " failed: " + error;
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 13, 0)
  if (handle != nullptr && handle->comm != nullptr) {
    const char* last = ncclGetLastError(handle->comm);
    if (last != nullptr && *last != '\0') msg += " (" + std::string(last) + ")";
  }
#endif
  const int rank = handle != nullptr ? handle->rank : -1;
  if (handle != nullptr) {
    handle->abort();
    msg += "; communicator aborted";
  }
  throw CommError("nccl", rank, msg);
}

}  // namespace rx::comm::detail

// `handle` is a detail::NcclHandle* (nullptr before the communicator exists).
#define RX_NCCL_CHECK(call, handle)                                                      \
  do {                                                                                   \
    const ncclResult_t rx_nccl_rc_ = (call);                                             \
    if (rx_nccl_rc_ != ncclSuccess)                                                      \
      ::rx::comm::detail::nccl_failed((handle), #call, ncclGetErrorString(rx_nccl_rc_)); \
  } while (0)

#define RX_CUDA_CHECK(call, handle)                                                      \
  do {                                                                                   \
    const cudaError_t rx_cuda_rc_ = (call);                                              \
    if (rx_cuda_rc_ != cudaSuccess)                                                      \
      ::rx::comm::detail::nccl_failed((handle), #call, cudaGetErrorString(rx_cuda_rc_)); \
  } while (0)

#endif  // RX_WITH_CUDA
