#include "common/parallel/reducer.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <sstream>

#include "common/comm/hang/traced_communicator.h"
#include "common/util/error.h"

namespace rx::parallel {

using json = nlohmann::json;

namespace {
double ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}
}  // namespace

Compression parse_compression(const std::string& name) {
  if (name == "none") return Compression::kNone;
  if (name == "fp16") return Compression::kFp16;
  if (name == "bf16") return Compression::kBf16;
  throw ConfigError("distributed.compression", "unknown value \"" + name + "\" (none, fp16 or bf16)");
}

const char* compression_name(Compression c) {
  switch (c) {
    case Compression::kNone:
      return "none";
    case Compression::kFp16:
      return "fp16";
    case Compression::kBf16:
      return "bf16";
  }
  return "none";
}

ReducerOptions reducer_options(const config::DistributedSpec& d) {
  ReducerOptions o;
  o.bucket_mb = d.bucket_mb;
  o.first_bucket_mb = d.first_bucket_mb;
  o.compression = parse_compression(d.compression);
  o.timeout = d.timeout();
  return o;
}

std::vector<std::vector<size_t>> plan_buckets(const std::vector<torch::Tensor>& params, double bucket_mb,
                                              double first_mb) {
  constexpr double kMiB = 1024.0 * 1024.0;
  std::vector<std::vector<size_t>> buckets;
  std::vector<size_t> current;
  double bytes = 0;
  auto close = [&] {
    if (current.empty()) return;
    buckets.push_back(std::move(current));
    current.clear();
    bytes = 0;
  };
  for (size_t k = params.size(); k-- > 0;) {
    const auto& p = params[k];
    if (!current.empty() && params[current.front()].scalar_type() != p.scalar_type()) close();
    current.push_back(k);
    bytes += static_cast<double>(p.numel()) * static_cast<double>(p.element_size());
    const double cap = (buckets.empty() ? first_mb : bucket_mb) * kMiB;
    if (bucket_mb <= 0 || bytes >= cap) close();
  }
  close();
  return buckets;
}

// [Aligned slices] Each gradient starts at a multiple of kSliceAlignBytes in its bucket (zero
// padding between them, summed and averaged as zeros). The fused optimizer moves the parameters into
// buffers with the same layout, and cuDNN's channels-last kernels fault ("misaligned address", found
// on an H200) on a weight that is not 16-byte aligned; 256 bytes is what cudaMalloc guarantees.
//
// [Bucket buffer] One flat buffer per bucket; every parameter's .grad aliases its slice
// (DDP's gradient_as_bucket_view). AccumulateGrad adds into an existing .grad in place, so backward
// writes the gradients straight into the buffer the all-reduce sends, and the averaged result is
// read by the optimizer through the same aliases: no copy in, no copy out. With compression, `wire`
// is a separate 16-bit buffer: cast in at launch, cast back at finalize.
// [Average first] A compressed bucket is divided by the world size in fp32 before the cast, as
// PyTorch's fp16 compression hook divides before its all-reduce: the 16-bit sum then never exceeds
// the largest gradient, where a sum of world-size gradients could pass fp16's 65,504 (loss-scaled
// fp16 gradients live near that limit) and turn a whole bucket into inf.
struct Reducer::Bucket {
  std::vector<size_t> params;  // indices into params_, in bucket order
  torch::Tensor buffer;
  torch::Tensor wire;   // what is all-reduced: `buffer` itself, or its 16-bit copy
  int64_t pending = 0;  // gradients not yet ready this step
  std::shared_ptr<comm::Work> work;
  Clock::time_point ready_at;
  Clock::time_point launched_at, finished_at;  // this step ([Bucket timing])
  bool finished = false;
  // Statistics (ms).
  double ready_ms_sum = 0;     // ready time since the previous sync, summed over measured steps
  double window_ready_ms = 0;  // same, since the last gather_arrivals()
  double exposed_ms_sum = 0;   // time finalize() waited for this bucket
};

Reducer::Reducer(torch::nn::Module& module, comm::Communicator& comm, ReducerOptions opts)
    : comm_(comm), opts_(opts) {
  if (opts_.compression != Compression::kNone) {
    const auto caps = comm_.capabilities();
    const auto wire = opts_.compression == Compression::kFp16 ? torch::kHalf : torch::kBFloat16;
    if (!caps.can_allreduce(wire) || !caps.supports(comm::ReduceOp::kSum))
      throw ConfigError("distributed.compression", std::string("\"") + compression_name(opts_.compression) +
                                                       "\" needs a backend that all-reduces " +
                                                       c10::toString(wire) + " (nccl); the " +
                                                       comm_.backend_name() + " backend reduces only " +
                                                       caps.dtype_list() + ", use \"none\"");
  }
  std::vector<torch::Tensor> tensors;
  for (const auto& item : module.named_parameters()) {
    if (!item.value().requires_grad()) continue;
    // Dense layouts only (contiguous or channels-last): a gradient alias spans exactly numel()
    // elements of the bucket with the parameter's own strides ([Alias, not view]).
    RX_CHECK(item.value().is_non_overlapping_and_dense(), "parameter " << item.key() << " is not dense");
    params_.emplace_back();
    params_.back().name = item.key();
    params_.back().tensor = item.value();
    tensors.push_back(item.value());
  }
  RX_CHECK(!params_.empty(), "a model without trainable parameters");
  const auto plan = plan_buckets(tensors, opts_.bucket_mb, opts_.first_bucket_mb);
  for (size_t b = 0; b < plan.size(); ++b) {
    auto bucket = std::make_unique<Bucket>();
    int64_t total = 0;
    const int64_t align =
        std::max<int64_t>(1, kSliceAlignBytes / params_[plan[b].front()].tensor.element_size());
    for (size_t i : plan[b]) {
      total = (total + align - 1) / align * align;  // [Aligned slices]
      params_[i].bucket = b;
      params_[i].offset = total;
      total += params_[i].tensor.numel();
    }
    bucket->params = plan[b];
    bucket->buffer = torch::zeros({total}, params_[plan[b].front()].tensor.options());
    bucket->wire = bucket->buffer;
    if (opts_.compression != Compression::kNone)
      bucket->wire = torch::empty(
          {total}, bucket->buffer.options().dtype(
                       opts_.compression == Compression::kFp16 ? torch::kHalf : torch::kBFloat16));
    bucket->pending = static_cast<int64_t>(plan[b].size());
    buckets_.push_back(std::move(bucket));
  }
  ready_.assign(params_.size(), false);
  attach_grad_aliases();
  // [Ready hook] A post hook on each parameter's AccumulateGrad node runs once the gradient has
  // been accumulated into .grad (our alias), i.e. exactly when it is final for this backward. We
  // hold the accumulator nodes: autograd keeps only a weak reference, and a node re-created for
  // the next graph would not carry the hook.
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i];
    p.accumulator = torch::autograd::impl::grad_accumulator(p.tensor);
    RX_CHECK(p.accumulator, "parameter " << p.name << " has no gradient accumulator");
    p.hook_key = p.accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, i](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          on_grad_ready(i);
          return outputs;
        }));
  }
}

Reducer::~Reducer() {
  for (auto& p : params_)
    if (p.accumulator) p.accumulator->del_post_hook(p.hook_key);
}

// [Alias, not view] The .grad tensors alias the bucket storage through set_() rather than being
// narrow()/view() results: LibTorch 1.13's Optimizer::zero_grad() calls detach_() on every .grad,
// which autograd refuses on views ("Can't detach views in-place"); an alias is a plain tensor.
void Reducer::attach_grad_aliases() {
  torch::NoGradGuard no_grad;
  for (auto& p : params_) {
    auto& bucket = *buckets_[p.bucket];
    if (!p.grad_alias.defined()) {
      p.grad_alias = torch::empty({0}, bucket.buffer.options());
      p.grad_alias.set_(bucket.buffer.storage(), bucket.buffer.storage_offset() + p.offset, p.tensor.sizes(),
                        p.tensor.strides());
    }
    const auto& grad = p.tensor.grad();
    if (grad.defined() && grad.data_ptr() == p.grad_alias.data_ptr() && grad.sizes() == p.tensor.sizes())
      continue;
    // Someone replaced or dropped .grad (zero_grad(set_to_none), a first step): adopt its values.
    if (grad.defined())
      p.grad_alias.copy_(grad);
    else
      p.grad_alias.zero_();
    p.tensor.mutable_grad() = p.grad_alias;
  }
}

void Reducer::zero_grads() {
  attach_grad_aliases();  // every .grad is its alias again (a replaced one's values are overwritten next)
  torch::NoGradGuard no_grad;
  for (auto& b : buckets_) b->buffer.zero_();  // the [Aligned slices] padding is zero already
}

void Reducer::mark_all_ready() {
  RX_CHECK(sync_, "mark_all_ready() without prepare_for_backward(true)");
  for (const auto& b : buckets_)
    for (size_t i : b->params) on_grad_ready(i);
}

void Reducer::prepare_for_backward(bool sync) {
  RX_CHECK(!sync_, "prepare_for_backward() again after a synchronising backward, without finalize()");
  attach_grad_aliases();
  sync_ = sync;
}

void Reducer::on_grad_ready(size_t i) {
  if (!sync_) return;  // [No sync] accumulation micro-batch: gradients just add up in the buffers
  auto& p = params_[i];
  if (ready_[i])
    throw Error("gradient sync: parameter " + p.name +
                " received a gradient twice in one synchronising backward (call finalize() after each)");
  ready_[i] = true;
  auto& bucket = *buckets_[p.bucket];
  // AccumulateGrad replaces .grad instead of adding in place under create_graph: copy it back in.
  if (p.tensor.grad().data_ptr() != p.grad_alias.data_ptr()) {
    torch::NoGradGuard no_grad;
    p.grad_alias.copy_(p.tensor.grad());
    p.tensor.mutable_grad() = p.grad_alias;
  }
  if (--bucket.pending == 0) {
    bucket.ready_at = Clock::now();
    launch_ready_buckets();
  }
  poll_in_flight();
}

// [Launch order] MPI (and NCCL) match collectives by call order, so bucket k is launched only after
// buckets 0..k-1, even if its gradients were ready earlier; every rank thus posts the same sequence.
void Reducer::launch_ready_buckets() {
  comm::AllreduceOptions o;
  o.op = comm::ReduceOp::kSum;
  o.timeout = opts_.timeout;
  while (next_launch_ < buckets_.size() && buckets_[next_launch_]->pending == 0) {
    auto& b = *buckets_[next_launch_];
    if (!b.wire.is_same(b.buffer)) {  // [Average first]
      if (comm_.world_size() > 1) b.buffer.div_(comm_.world_size());
      b.wire.copy_(b.buffer);
    }
    comm::hang::mark_bucket(comm_, static_cast<int>(next_launch_));  // named in a hang report
    b.launched_at = Clock::now();
    b.work = comm_.allreduce(b.wire, o);
    ++next_launch_;
  }
}

// [Progress] Open MPI advances non-blocking collectives only inside MPI calls. Every ready hook
// tests the oldest in-flight bucket (MPI_Test runs the progress engine for all of them), so the
// all-reduces move forward between the layers of backward instead of all at finalize(). This keeps
// every MPI call on the training thread (MPI_THREAD_SERIALIZED is enough; no progress thread).
void Reducer::poll_in_flight() {
  while (next_poll_ < next_launch_ && buckets_[next_poll_]->work->is_completed()) {
    buckets_[next_poll_]->finished_at = Clock::now();
    buckets_[next_poll_]->finished = true;
    ++next_poll_;
  }
}

void Reducer::throw_unused() {
  std::ostringstream os;
  int n = 0;
  for (size_t i = 0; i < params_.size(); ++i)
    if (!ready_[i]) os << (n++ ? ", " : "") << params_[i].name;
  throw Error("gradient sync: " + std::to_string(n) + " parameter(s) got no gradient this step: " + os.str() +
              " (every trainable parameter must contribute to the loss)");
}

// [Stream wait] finalize() orders the device stream after each bucket's all-reduce (wait_stream):
// on CPU backends that is a host wait, so the per-bucket exposed times are host waits; with NCCL the
// host does not wait, the device does, and the step split's comm_exposed (device events, PhaseTimer)
// is the exposed time. The previous step's operations get a host wait with the timeout here, so the
// host runs at most one step ahead of a collective that never completes.
void Reducer::finalize() {
  RX_CHECK(sync_, "finalize() without prepare_for_backward(true) before the backward");
  if (next_launch_ < buckets_.size()) throw_unused();
  for (auto& w : previous_) w->wait(opts_.timeout);
  previous_.clear();
  const auto t0 = Clock::now();
  const int world = comm_.world_size();
  for (auto& bp : buckets_) {
    auto& b = *bp;
    const auto w0 = Clock::now();
    b.work->wait_stream(opts_.timeout);
    const auto w1 = Clock::now();
    b.exposed_ms_sum += ms_between(w0, w1);
    if (!b.finished) b.finished_at = w1;  // NCCL: when the stream was ordered after it (an upper bound)
    previous_.push_back(std::move(b.work));
    if (!b.wire.is_same(b.buffer))
      b.buffer.copy_(b.wire);  // averaged before the cast ([Average first])
    else if (world > 1)
      b.buffer.div_(world);  // same operation as the flat all-reduce: bit-identical
  }
  const auto t1 = Clock::now();
  ++steps_;
  exposed_ms_total_ += ms_between(t0, t1);
  if (has_reference_) {
    for (auto& b : buckets_) {
      const double ms = ms_between(reference_, b->ready_at);
      b->ready_ms_sum += ms;
      b->window_ready_ms += ms;
    }
    ++arrival_steps_;
    ++ready_steps_;
  }
  if (observer_)
    for (size_t k = 0; k < buckets_.size(); ++k) {
      const auto& b = *buckets_[k];
      observer_(
          {steps_ - 1, k, b.wire.numel() * b.wire.element_size(), b.ready_at, b.launched_at, b.finished_at});
    }
  reference_ = t1;
  has_reference_ = true;
  sync_ = false;
  next_launch_ = next_poll_ = 0;
  std::fill(ready_.begin(), ready_.end(), false);
  for (auto& b : buckets_) {
    b->pending = static_cast<int64_t>(b->params.size());
    b->finished = false;
  }
}

// [Straggler] The all-reduce evens out step times (fast ranks wait inside it), so a slow rank shows
// only in *when* its buckets become ready, counted from the end of the previous sync (which all
// ranks leave at about the same moment). The per-rank means are all-gathered rarely; a rank's lag
// is its mean over buckets of (its ready time - the earliest rank's), and the straggler is the rank
// with the largest lag. The first step after a gather is not measured (it includes evaluation).
void Reducer::gather_arrivals() {
  const int world = comm_.world_size();
  const int64_t nb = static_cast<int64_t>(buckets_.size());
  auto mine = torch::zeros({nb + 1}, torch::kFloat64);
  auto* m = mine.data_ptr<double>();
  for (int64_t b = 0; b < nb; ++b)
    m[b] = arrival_steps_ > 0 ? buckets_[b]->window_ready_ms / static_cast<double>(arrival_steps_) : 0.0;
  m[nb] = static_cast<double>(arrival_steps_);
  auto all = torch::empty({world * (nb + 1)}, torch::kFloat64);
  comm::AllgatherOptions o;
  o.timeout = opts_.timeout;
  comm_.allgather(mine, all, o)->wait(opts_.timeout);
  const auto* v = all.data_ptr<double>();
  std::vector<double> lag(world, 0.0);
  double min_steps = v[nb];
  for (int r = 0; r < world; ++r) min_steps = std::min(min_steps, v[r * (nb + 1) + nb]);
  for (int64_t b = 0; b < nb; ++b) {
    double earliest = v[b];
    for (int r = 1; r < world; ++r) earliest = std::min(earliest, v[r * (nb + 1) + b]);
    for (int r = 0; r < world; ++r) lag[r] += (v[r * (nb + 1) + b] - earliest) / static_cast<double>(nb);
  }
  const int worst = static_cast<int>(std::max_element(lag.begin(), lag.end()) - lag.begin());
  straggler_ = {{"rank", min_steps > 0 ? json(worst) : json(nullptr)},
                {"mean_lag_ms", min_steps > 0 ? lag[worst] : 0.0},
                {"lag_ms_by_rank", lag},
                {"steps_measured", static_cast<int64_t>(min_steps)}};
  for (auto& b : buckets_) b->window_ready_ms = 0;
  arrival_steps_ = 0;
  has_reference_ = false;
}

json Reducer::stats_json() const {
  json sizes = json::array(), counts = json::array(), per_bucket = json::array();
  for (const auto& b : buckets_) {
    sizes.push_back(b->buffer.numel() * b->buffer.element_size());
    counts.push_back(b->params.size());
  }
  const double steps = static_cast<double>(std::max<int64_t>(1, steps_));
  const double measured = static_cast<double>(std::max<int64_t>(1, ready_steps_));
  for (const auto& b : buckets_)
    per_bucket.push_back(
        {{"mean_ready_ms", b->ready_ms_sum / measured}, {"mean_exposed_ms", b->exposed_ms_sum / steps}});
  return {{"bucket_mb", opts_.bucket_mb},
          {"first_bucket_mb", opts_.first_bucket_mb},
          {"compression", compression_name(opts_.compression)},
          {"buckets", {{"count", buckets_.size()}, {"sizes_bytes", sizes}, {"num_params", counts}}},
          {"steps", steps_},
          {"mean_exposed_ms", exposed_ms_total_ / steps},
          {"per_bucket", per_bucket},
          {"straggler", straggler_}};
}

std::vector<std::vector<std::string>> Reducer::bucket_names() const {
  std::vector<std::vector<std::string>> out;
  for (const auto& b : buckets_) {
    out.emplace_back();
    for (size_t i : b->params) out.back().push_back(params_[i].name);
  }
  return out;
}

}  // namespace rx::parallel
