// resnext_worker: `train` (data-parallel training, one rank per process under mpirun/srun or alone)
// `describe` (the architecture report) and `devices` (what this build and node can train on).
#include <iostream>
#include <string>
#include <vector>

#include "common/util/error.h"
#include "worker/commands.h"

namespace {
constexpr int kExitUsage = 2;

void usage(std::ostream& os) {
  os << "usage: resnext_worker train --config FILE [--out DIR] [--set key=value ...]\n"
        "       resnext_worker --config FILE ...          (same as train)\n"
        "       resnext_worker describe --model NAME [--input HxWxC] [--classes K] [--json]\n"
        "       resnext_worker devices [--json]           (CUDA build? visible GPUs, versions)\n";
}
}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (args.empty() || args[0] == "--help" || args[0] == "-h") {
      usage(args.empty() ? std::cerr : std::cout);
      return args.empty() ? kExitUsage : 0;
    }
    if (args[0] == "describe") return rx::worker::describe_command({args.begin() + 1, args.end()});
    if (args[0] == "devices") return rx::worker::devices_command({args.begin() + 1, args.end()});
    if (args[0] == "train") return rx::worker::train_command({args.begin() + 1, args.end()});
    if (args[0].rfind("--", 0) == 0) return rx::worker::train_command(args);
    throw rx::UsageError("unknown command \"" + args[0] + "\"");
  } catch (const rx::UsageError& e) {
    std::cerr << "resnext_worker: " << e.what() << "\n";
    usage(std::cerr);
    return kExitUsage;
  } catch (const rx::ConfigError& e) {
    std::cerr << "resnext_worker: config error: " << e.what() << "\n";
    return kExitUsage;
  } catch (const rx::Error& e) {
    std::cerr << "resnext_worker: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "resnext_worker: unexpected error: " << e.what() << "\n";
    return 1;
  }
}
