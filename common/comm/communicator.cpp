#include "common/comm/communicator.h"

#include "common/util/error.h"

namespace rx::comm {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAvg:
      return "avg";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kMin:
      return "min";
  }
  return "?";
}

bool Capabilities::can_allreduce(c10::ScalarType t) const {
  for (auto d : allreduce_dtypes)
    if (d == t) return true;
  return false;
}

bool Capabilities::supports(ReduceOp op) const {
  for (auto o : reduce_ops)
    if (o == op) return true;
  return false;
}

std::string Capabilities::dtype_list() const {
  std::string out;
  for (auto d : allreduce_dtypes) out += (out.empty() ? "" : ", ") + std::string(c10::toString(d));
  return out.empty() ? "none" : out;
}

void Communicator::unsupported(const std::string& op) const {
  throw CommError(backend_name(), rank(), op + " is not supported by the " + backend_name() + " backend");
}

std::shared_ptr<Work> Communicator::allreduce(torch::Tensor&, const AllreduceOptions&) {
  unsupported("allreduce");
}
std::shared_ptr<Work> Communicator::broadcast(torch::Tensor&, const BroadcastOptions&) {
  unsupported("broadcast");
}
std::shared_ptr<Work> Communicator::allgather(const torch::Tensor&, torch::Tensor&, const AllgatherOptions&) {
  unsupported("allgather");
}
void Communicator::barrier(Millis) { unsupported("barrier"); }

namespace {
class CompletedWork : public Work {
 public:
  bool is_completed() override { return true; }
  void wait(Millis) override {}
};
}  // namespace

std::shared_ptr<Work> completed_work() { return std::make_shared<CompletedWork>(); }

}  // namespace rx::comm
