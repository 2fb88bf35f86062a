#pragma once
// Wires hang detection (common/comm/hang) into a training run: wraps the training communicator in
// the collective trace and starts the watchdog when distributed.hang_timeout_s > 0 and there are
// peers. The rank that writes the hang report puts it into the run record (result.json:
// {status "failed", error, hang, ...}) and sends it to the coordinator as a report of type "hang"
// ({"type": "hang", "report": {...}}); every rank's next collective wait then throws HangDetected and
// the job fails like any other failure (MPI_Abort, exit 1).
#include <memory>
#include <nlohmann/json.hpp>

#include "common/comm/communicator.h"
#include "common/comm/hang/hang_watchdog.h"
#include "common/config/job_spec.h"
#include "worker/report_sender.h"

namespace rx::worker {

struct HangGuard {
  std::unique_ptr<comm::Communicator> comm;            // the communicator to train with (traced or unchanged)
  std::unique_ptr<comm::hang::HangWatchdog> watchdog;  // null when off
};

// `boot` agrees on the run id (a collective on every rank); `sender` may be null (no coordinator).
// `sender` must outlive the returned guard.
HangGuard guard_against_hangs(std::unique_ptr<comm::Communicator> comm, const config::JobSpec& spec,
                              comm::Communicator& boot, ReportSender* sender);

}  // namespace rx::worker
