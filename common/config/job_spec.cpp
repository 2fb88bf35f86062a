#include "common/config/job_spec.h"

#include <cmath>
#include <utility>

#include "common/util/error.h"
#include "common/util/sha256.h"

namespace rx::config {

using json = nlohmann::json;

namespace {

json::json_pointer pointer(const std::string& dotted) {
  std::string p = "/" + dotted;
  for (auto& c : p)
    if (c == '.') c = '/';
  return json::json_pointer(p);
}

template <class E>
using Names = std::vector<std::pair<E, const char*>>;

const Names<DataSource> kSources = {{DataSource::kShared, "shared"},
                                    {DataSource::kCoordinator, "coordinator"}};
const Names<OptimizerKind> kOptimizers = {
    {OptimizerKind::kSgd, "sgd"}, {OptimizerKind::kAdam, "adam"}, {OptimizerKind::kAdamW, "adamw"}};
const Names<LrScheduleKind> kSchedules = {{LrScheduleKind::kConstant, "constant"},
                                          {LrScheduleKind::kMultistep, "multistep"},
                                          {LrScheduleKind::kCosine, "cosine"}};
const Names<DeviceChoice> kDevices = {
    {DeviceChoice::kAuto, "auto"}, {DeviceChoice::kCpu, "cpu"}, {DeviceChoice::kCuda, "cuda"}};
const Names<ResumeMode> kResume = {{ResumeMode::kNone, "none"}, {ResumeMode::kAuto, "auto"}};

// Reads a resolved document (every key present and checked by resolve()) into the spec's fields.
class Reader {
 public:
  Reader(const json& resolved, std::set<std::string>& integer_spelled)
      : r_(resolved), ints_(integer_spelled) {}

  void operator()(const std::string& k, int& v) { v = at(k).get<int>(); }
  void operator()(const std::string& k, int64_t& v) { v = at(k).get<int64_t>(); }
  void operator()(const std::string& k, uint64_t& v) { v = at(k).get<uint64_t>(); }
  void operator()(const std::string& k, bool& v) { v = at(k).get<bool>(); }
  void operator()(const std::string& k, std::string& v) { v = at(k).get<std::string>(); }
  void operator()(const std::string& k, double& v) { v = number(k, at(k)); }
  void operator()(const std::string& k, std::optional<int>& v) {
    const json& j = at(k);
    v = j.is_null() ? std::nullopt : std::optional<int>(j.get<int>());
  }
  void operator()(const std::string& k, std::optional<std::string>& v) {
    const json& j = at(k);
    v = j.is_null() ? std::nullopt : std::optional<std::string>(j.get<std::string>());
  }
  void operator()(const std::string& k, std::vector<double>& v) {
    const json& j = at(k);
    v.clear();
    for (size_t i = 0; i < j.size(); ++i) v.push_back(number(k + "[" + std::to_string(i) + "]", j[i]));
  }
  void operator()(const std::string& k, std::array<double, 2>& v) {
    const json& j = at(k);
    if (j.size() != v.size())
      throw ConfigError(k, "must have exactly " + std::to_string(v.size()) + " values");
    for (size_t i = 0; i < v.size(); ++i) v[i] = number(k + "[" + std::to_string(i) + "]", j[i]);
  }
  template <class E>
  void choice(const std::string& k, E& v, const Names<E>& names) {
    const std::string s = at(k).get<std::string>();
    for (const auto& [value, name] : names)
      if (s == name) {
        v = value;
        return;
      }
    throw ConfigError(k, "\"" + s + "\" has no typed counterpart");  // schema and names out of step
  }

 private:
  const json& at(const std::string& k) const {
    const auto p = pointer(k);
    if (!r_.contains(p)) throw ConfigError(k, "missing from the resolved config");
    return r_.at(p);
  }
  double number(const std::string& k, const json& j) {
    if (j.is_number_integer()) ints_.insert(k);
    return j.get<double>();
  }
  const json& r_;
  std::set<std::string>& ints_;
};

// Writes the spec's fields back as the resolved document.
class Writer {
 public:
  Writer(json& out, const std::set<std::string>& integer_spelled) : out_(out), ints_(integer_spelled) {}

  template <class T>
  void operator()(const std::string& k, const T& v) {
    out_[pointer(k)] = v;
  }
  void operator()(const std::string& k, const double& v) { out_[pointer(k)] = number(k, v); }
  void operator()(const std::string& k, const std::optional<int>& v) {
    out_[pointer(k)] = v ? json(*v) : json(nullptr);
  }
  void operator()(const std::string& k, const std::optional<std::string>& v) {
    out_[pointer(k)] = v ? json(*v) : json(nullptr);
  }
  void operator()(const std::string& k, const std::vector<double>& v) {
    out_[pointer(k)] = list(k, v.data(), v.size());
  }
  void operator()(const std::string& k, const std::array<double, 2>& v) {
    out_[pointer(k)] = list(k, v.data(), v.size());
  }
  template <class E>
  void choice(const std::string& k, const E& v, const Names<E>& names) {
    for (const auto& [value, name] : names)
      if (v == value) {
        out_[pointer(k)] = name;
        return;
      }
    throw ConfigError(k, "enum value without a name");
  }

 private:
  json number(const std::string& k, double v) const {
    if (ints_.count(k) && std::nearbyint(v) == v && std::fabs(v) < 9.0e15)
      return json(static_cast<int64_t>(v));
    return json(v);
  }
  json list(const std::string& k, const double* v, size_t n) const {
    json a = json::array();
    for (size_t i = 0; i < n; ++i) a.push_back(number(k + "[" + std::to_string(i) + "]", v[i]));
    return a;
  }
  json& out_;
  const std::set<std::string>& ints_;
};

// [Spec binding] The one list that ties each schema key to its field: from_json() and to_json() both
// walk it, so reading and writing cannot drift apart (test_config checks to_json(from_json(x)) against
// resolve(x) for every key of every shipped config). S is JobSpec (reading) or const JobSpec (writing).
template <class Io, class S>
void bind(Io& io, S& s) {
  io("name", s.name);
  auto& m = s.model;
  io("model.preset", m.preset);
  io("model.depth", m.depth);
  io("model.cardinality", m.cardinality);
  io("model.base_width", m.base_width);
  io("model.bottleneck_width", m.bottleneck_width);
  io("model.stem_channels", m.stem_channels);
  io("model.base_planes", m.base_planes);
  io("model.num_classes", m.num_classes);
  io("model.zero_init_residual", m.zero_init_residual);
  io("model.fused_bn_relu", m.fused_bn_relu);
  io("model.pretrained", m.pretrained);
  io("model.replace_head", m.replace_head);
  auto& d = s.data;
  io("data.format", d.format);
  io("data.path", d.path);
  io.choice("data.source", d.source, kSources);
  io("data.shard_mode", d.shard_mode);
  io("data.max_train_samples", d.max_train_samples);
  io("data.max_test_samples", d.max_test_samples);
  io("data.num_workers", d.num_workers);
  io("data.prefetch", d.prefetch);
  io("data.channels_last", d.channels_last);
  auto& a = d.augment;
  io("data.augment.crop_padding", a.crop_padding);
  io("data.augment.flip", a.flip);
  io("data.augment.mean", a.mean);
  io("data.augment.std", a.std);
  io("data.augment.resize", a.resize);
  io("data.augment.pad_to", a.pad_to);
  io("data.augment.replicate_channels", a.replicate_channels);
  io("data.augment.erasing", a.erasing);
  io("data.augment.erasing_scale", a.erasing_scale);
  io("data.augment.erasing_ratio", a.erasing_ratio);
  io("data.augment.on_device", a.on_device);
  auto& t = s.training;
  io("training.epochs", t.epochs);
  io("training.batch_size", t.batch_size);
  io("training.seed", t.seed);
  io("training.max_steps_per_epoch", t.max_steps_per_epoch);
  auto& o = t.optimizer;
  io.choice("training.optimizer.name", o.name, kOptimizers);
  io("training.optimizer.lr", o.lr);
  io("training.optimizer.momentum", o.momentum);
  io("training.optimizer.nesterov", o.nesterov);
  io("training.optimizer.weight_decay", o.weight_decay);
  io("training.optimizer.fused", o.fused);
  io("training.optimizer.betas", o.betas);
  io("training.optimizer.eps", o.eps);
  auto& l = t.lr_schedule;
  io.choice("training.lr_schedule.name", l.name, kSchedules);
  io("training.lr_schedule.milestones", l.milestones);
  io("training.lr_schedule.gamma", l.gamma);
  io("training.lr_schedule.warmup_epochs", l.warmup_epochs);
  io("training.lr_schedule.scale_with_world", l.scale_with_world);
  io("training.label_smoothing", t.label_smoothing);
  io("training.ema_decay", t.ema_decay);
  io("training.accumulate_steps", t.accumulate_steps);
  io("training.eval_every_epochs", t.eval_every_epochs);
  io("training.log_every_steps", t.log_every_steps);
  io.choice("training.device", t.device, kDevices);
  io("training.precision", t.precision);
  io("training.cudnn_benchmark", t.cudnn_benchmark);
  io("training.cudnn_deterministic", t.cudnn_deterministic);
  io("training.cuda_graph", t.cuda_graph);
  io("training.threads", t.threads);
  auto& x = s.distributed;
  io("distributed.backend", x.backend);
  io("distributed.bucket_mb", x.bucket_mb);
  io("distributed.first_bucket_mb", x.first_bucket_mb);
  io("distributed.compression", x.compression);
  io("distributed.timeout_s", x.timeout_s);
  io("distributed.hang_timeout_s", x.hang_timeout_s);
  io("report.retry_s", s.report.retry_s);
  auto& c = s.checkpoint;
  io("checkpoint.every_steps", c.every_steps);
  io("checkpoint.every_epochs", c.every_epochs);
  io("checkpoint.keep", c.keep);
  io.choice("checkpoint.resume", c.resume, kResume);
  io("output.dir", s.output.dir);
  io("output.trace", s.output.trace);
}

JobSpec read_resolved(const json& resolved) {
  JobSpec s;
  Reader reader(resolved, s.integer_spelled);
  bind(reader, s);
  return s;
}

}  // namespace

JobSpec from_json(const json& config, const std::vector<Override>& overrides) {
  return read_resolved(resolve(config, overrides));
}

JobSpec from_file(const std::string& path, const std::vector<Override>& overrides) {
  return read_resolved(resolve_file(path, overrides));
}

json to_json(const JobSpec& spec) {
  json out = json::object();
  Writer writer(out, spec.integer_spelled);
  bind(writer, spec);
  return out;
}

json model_json(const JobSpec& spec) { return to_json(spec).at("model"); }

std::string config_hash(const JobSpec& spec) { return config_hash(to_json(spec)); }

model::ResNeXtSpec model_spec(const JobSpec& spec) { return model_spec(to_json(spec)); }

}  // namespace rx::config
