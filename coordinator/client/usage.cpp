#include "coordinator/client/usage.h"

namespace rx::coord {

namespace {

constexpr const char* kClientFlags =
    "client flags: --url URL (default http://127.0.0.1:8080), --token T (or env RX_TOKEN), --json,\n"
    "              --timeout-ms MS (per request, default 10000)\n";

struct Entry {
  const char* name;
  const char* text;
};

const Entry kCommands[] = {
    {"serve",
     "usage: resnext_coordinator serve --state-dir DIR [--listen 127.0.0.1:8080] [--slots N]\n"
     "        [--launcher local|slurm] [--token-file F] [--worker PATH] [--configs-dir DIR]\n"
     "        [--threads N] [--idle-timeout-s S] [--header-timeout-s S] [--cancel-grace-s S]\n"
     "        [--mpirun PATH] [--log-level L]\n"
     "        [--slurm-template FILE] [--sbatch-arg FLAG]...   (with --launcher slurm)\n"
     "Runs the job service: the REST API under /v1, Prometheus /metrics, and the dashboard at\n"
     "http://<listen>/ui/ (the page asks for a token when --token-file is set).\n"},
    {"submit",
     "usage: resnext_coordinator submit CONFIG.json|PRESET --ranks N [--set key=value]... [--name NAME]\n"
     "        [--idempotency-key K] [--max-restarts N] [--min-ranks N] [client flags]\n"
     "Submits a job: a config file, or the name of a preset in the server's configs dir.\n"
     "--max-restarts N: relaunch the job with --resume up to N times when its processes fail (default 0).\n"
     "--min-ranks N: a relaunch may run on fewer ranks, down to N, when fewer slots are free\n"
     "  (default: --ranks).\n"},
    {"list",
     "usage: resnext_coordinator list [--state "
     "queued|launching|running|restarting|succeeded|failed|cancelled]\n"
     "        [--limit N] [--offset N] [client flags]\n"
     "Lists jobs, newest first.\n"},
    {"status",
     "usage: resnext_coordinator status ID [--json] [client flags]\n"
     "       resnext_coordinator status [ID...] --watch [--interval-ms MS] [client flags]\n"
     "Shows one job. With --watch: one line per job (all queued and running jobs if no ID is given)\n"
     "with a bar, epoch and step, loss, accuracy, images/s and ETA, redrawn in place on a terminal and\n"
     "printed once per change otherwise, then a summary when all have finished.\n"
     "--watch --json prints the job's JSON (one ID) on every change.\n"},
    {"logs",
     "usage: resnext_coordinator logs ID [--tail N] [client flags]\nPrints the tail of the job's "
     "worker.log.\n"},
    {"cancel", "usage: resnext_coordinator cancel ID [client flags]\nCancels a queued or running job.\n"},
};

}  // namespace

std::string command_usage(const std::string& command) {
  for (size_t i = 0; i < sizeof kCommands / sizeof kCommands[0]; ++i)
    if (command == kCommands[i].name) return std::string(kCommands[i].text) + (i == 0 ? "" : kClientFlags);
  return "";
}

bool wants_help(const std::vector<std::string>& argv) {
  for (const auto& a : argv)
    if (a == "--help" || a == "-h") return true;
  return false;
}

}  // namespace rx::coord
