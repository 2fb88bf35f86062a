#pragma once
// MPI backend: CPU tensors over Open MPI's non-blocking collectives.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1  // C API only (see common/comm/CMakeLists.txt)
#endif
#include <mpi.h>

#include <memory>

#include "common/comm/communicator.h"

namespace rx::comm {

// [MpiRuntime] RAII owner of MPI_Init_thread / MPI_Finalize. Asks for MPI_THREAD_SERIALIZED (the
// training loop calls MPI from one thread at a time, but not always the main thread) and throws
// CommError if the library offers less. If MPI is already initialised (a test harness, an embedding
// program) it neither initialises nor finalises.
class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv);
  MpiRuntime() : MpiRuntime(nullptr, nullptr) {}
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  int thread_level() const { return provided_; }
  bool owns_mpi() const { return owns_; }
  // MPI_Abort(MPI_COMM_WORLD, code): takes every rank of the job down. Never returns.
  [[noreturn]] static void abort(int code);

 private:
  bool owns_ = false;
  int provided_ = 0;
};

// Duplicates `comm` (so our traffic never matches the caller's), sets MPI_ERRORS_RETURN on the
// duplicate and computes local rank/size with MPI_Comm_split_type(MPI_COMM_TYPE_SHARED).
// Needs an initialised MPI (see MpiRuntime); throws CommError otherwise.
std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm comm = MPI_COMM_WORLD);

}  // namespace rx::comm
