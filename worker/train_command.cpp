#include "common/util/error.h"
#include "worker/commands.h"

namespace rx::worker {
int train_command(const std::vector<std::string>&) { throw Error("train: not implemented yet"); }
}  // namespace rx::worker
