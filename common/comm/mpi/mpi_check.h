#pragma once
// [RX_MPI_CHECK] Wraps every MPI call. Our communicators set MPI_ERRORS_RETURN, so a failing call
// returns a code instead of killing the process; this turns it into CommError("mpi", rank, ...)
// naming the call as written, MPI's error string and the rank in MPI_COMM_WORLD.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1  // C API only (see common/comm/CMakeLists.txt)
#endif
#include <mpi.h>

#include <string>

#include "common/util/error.h"

namespace rx::comm::detail {

// Rank in MPI_COMM_WORLD, or -1 when MPI is not (or no longer) initialised.
inline int mpi_world_rank_or_minus1() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (!init || fin) return -1;
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

inline std::string mpi_error_string(int code) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, buf, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(buf, static_cast<size_t>(len));
}

[[noreturn]] inline void mpi_call_failed(const char* call, int code) {
  throw CommError("mpi", mpi_world_rank_or_minus1(),
                  std::string(call) + " failed: " + mpi_error_string(code));
}

}  // namespace rx::comm::detail

#define RX_MPI_CHECK(call)                                                                 \
  do {                                                                                     \
    const int rx_mpi_rc_ = (call);                                                         \
    if (rx_mpi_rc_ != MPI_SUCCESS) ::rx::comm::detail::mpi_call_failed(#call, rx_mpi_rc_); \
  } while (0)
