#pragma once
// NCCL backend: CUDA tensors on cuda:<local rank>. CUDA builds only (RX_WITH_CUDA).
#ifdef RX_WITH_CUDA

#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1  // C API only (see common/comm/CMakeLists.txt)
#endif
#include <mpi.h>

#include <memory>

#include "common/comm/communicator.h"

namespace rx::comm {

// [NCCL bootstrap] Rank 0 creates the ncclUniqueId and broadcasts it over (a dup of) `comm` with the
// mpi backend, so a missing peer fails the bootstrap with a timeout rather than hanging in
// ncclCommInitRank. Each rank binds to cuda:<local rank>; there must be at least local_size GPUs.
//
// [Streams] Collectives run on a dedicated high-priority stream that first waits (via an event) on
// the caller's current stream, so they overlap with compute without racing it. Work::wait polls the
// completion event and ncclCommGetAsyncError until its deadline; on timeout or async error it aborts
// the communicator (the only way to free peers stuck in NCCL kernels) and throws CommError. After
// completion the caller's current stream is made to wait on the NCCL stream's event.
std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm comm = MPI_COMM_WORLD);

}  // namespace rx::comm

#endif  // RX_WITH_CUDA
