// resnext_coordinator: `serve` runs the job service; submit/list/status/logs/cancel talk to one.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "common/util/error.h"
#include "coordinator/client/cli.h"
#include "coordinator/client/usage.h"
#include "coordinator/serve.h"

namespace {

const char* kUsage =
    "usage:\n"
    "  resnext_coordinator serve --state-dir DIR [--listen 127.0.0.1:8080] [--slots N]\n"
    "        [--launcher local|slurm] [--token-file F] [--worker PATH] [--configs-dir DIR]\n"
    "        [--threads N] [--idle-timeout-s S] [--cancel-grace-s S] [--mpirun PATH] [--log-level L]\n"
    "        [--slurm-template FILE] [--sbatch-arg FLAG]...   (with --launcher slurm)\n"
    "  resnext_coordinator submit CONFIG.json|PRESET --ranks N [--set key=value]... [--name NAME]\n"
    "        [--idempotency-key K]\n"
    "  resnext_coordinator list [--state S] [--limit N] [--offset N]\n"
    "  resnext_coordinator status ID | status [ID...] --watch [--interval-ms MS]\n"
    "  resnext_coordinator logs ID [--tail N]\n"
    "  resnext_coordinator cancel ID\n"
    "client flags: --url http://127.0.0.1:8080, --token T (or env RX_TOKEN), --json, --timeout-ms MS\n"
    "`resnext_coordinator COMMAND --help` describes one command.\n";

std::string exe_dir() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : p.parent_path().string();
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  const std::string cmd = args[0];
  args.erase(args.begin());
  if (const std::string u = rx::coord::command_usage(cmd); !u.empty() && rx::coord::wants_help(args)) {
    std::fputs(u.c_str(), stdout);
    return 0;
  }
  try {
    if (cmd == "serve") return rx::coord::serve_main(args, exe_dir());
    if (cmd == "submit" || cmd == "list" || cmd == "status" || cmd == "logs" || cmd == "cancel")
      return rx::coord::client_main(cmd, args);
    throw rx::UsageError("unknown command '" + cmd + "'");
  } catch (const rx::UsageError& e) {
    std::cerr << "resnext_coordinator: " << e.what() << "\n" << kUsage;
    return 2;
  } catch (const rx::ConfigError& e) {
    std::cerr << "resnext_coordinator: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "resnext_coordinator: " << e.what() << "\n";
    return 1;
  }
}
