// [JobService: data] The shard index plan (its dataset size read from the job's own files) and
// shard bytes served from a small canonical-path cache.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>

#include "common/data/shard_plan.h"
#include "common/util/error.h"
#include "coordinator/jobs/api_error.h"
#include "coordinator/jobs/job_service.h"
#include "coordinator/util/util.h"

namespace rx::coord {

namespace fs = std::filesystem;
using nlohmann::json;

config::JobSpec JobService::spec_of(const Job& job) const {
  // Submission checked the config; a row that no longer reads (a schema change since) is reported
  // as the job's config error, not as a crash.
  try {
    return config::from_json(job.config);
  } catch (const ConfigError& e) {
    throw ApiError(409, "invalid_config", "job '" + job.id + "': " + e.message(), e.field());
  }
}

int64_t JobService::dataset_size_for(const config::JobSpec& spec) const {
  int64_t n = 0;
  try {
    n = data::sample_count(spec.data.format, spec.data.path, data::Split::kTrain);
  } catch (const Error& e) {
    throw ApiError(422, "dataset_size_unknown",
                   "cannot determine the training set size for data.format '" + spec.data.format +
                       "' from data.path: " + e.what(),
                   "data.path");
  }
  if (spec.data.max_train_samples > 0) n = std::min(n, spec.data.max_train_samples);
  return n;
}

json JobService::shard(const std::string& id, int rank, int64_t epoch) {
  Job job;
  {
    std::shared_lock lock(mu_);
    job = find_or_404(id);
  }
  return compute_shard(job, rank, epoch);
}

json JobService::compute_shard(const Job& job, int rank, int64_t epoch) const {
  if (rank < 0 || rank >= job.world_size)
    throw ApiError(404, "not_found", "rank must be in [0, " + std::to_string(job.world_size) + ")", "rank");
  if (epoch < 0) throw ApiError(400, "invalid_field", "must be >= 0", "epoch");
  const config::JobSpec job_spec = spec_of(job);
  data::ShardSpec spec;
  spec.dataset_size = dataset_size_for(job_spec);
  spec.world_size = job.world_size;
  spec.rank = rank;
  spec.epoch = epoch;
  spec.seed = job_spec.training.seed;
  try {
    spec.mode = data::parse_shard_mode(job_spec.data.shard_mode);
    json indices = data::shard_indices(spec);
    const std::string sha = sha256_hex(indices.dump());
    return json{{"rank", rank},
                {"world_size", job.world_size},
                {"epoch", epoch},
                {"mode", data::shard_mode_name(spec.mode)},
                {"dataset_size", spec.dataset_size},
                {"indices", std::move(indices)},
                {"sha256", sha}};
  } catch (const ConfigError& e) {
    throw ApiError(400, "invalid_field", e.message(), e.field().empty() ? "dataset_size" : e.field());
  }
}

std::shared_ptr<const data::Dataset> JobService::dataset(const std::string& format, const std::string& path,
                                                         bool test) {
  std::error_code ec;
  const std::string canon = fs::weakly_canonical(fs::absolute(path, ec), ec).lexically_normal().string();
  const std::string key = format + "\n" + (ec ? path : canon) + (test ? "\ntest" : "");
  std::lock_guard<std::mutex> lock(data_mu_);
  for (auto it = datasets_.begin(); it != datasets_.end(); ++it)
    if (it->first == key) {
      datasets_.splice(datasets_.begin(), datasets_, it);  // most recently used first
      return datasets_.front().second;
    }
  std::shared_ptr<const data::Dataset> ds;
  try {
    ds = std::make_shared<const data::Dataset>(
        data::load_dataset(format, path, test ? data::Split::kTest : data::Split::kTrain));
  } catch (const Error& e) {
    throw ApiError(500, "dataset_unreadable", e.what(), "data.path");
  }
  spdlog::info("loaded {} dataset {} ({} samples) for shard serving", format, ec ? path : canon, ds->count);
  datasets_.emplace_front(key, ds);
  if (datasets_.size() > kMaxCachedDatasets) datasets_.pop_back();
  return ds;
}

ShardData JobService::shard_data(const std::string& id, const std::string& secret, int rank,
                                 const std::string& part, bool test) {
  check_job_secret(id, secret);
  Job job;
  {
    std::shared_lock lock(mu_);
    job = find_or_404(id);
  }
  if (rank < 0 || rank >= job.world_size)
    throw ApiError(404, "not_found", "rank must be in [0, " + std::to_string(job.world_size) + ")", "rank");
  const config::JobSpec spec = spec_of(job);
  if (spec.data.source != config::DataSource::kCoordinator)
    throw ApiError(409, "shared_dataset", "job reads a shared dataset (data.source is not \"coordinator\")",
                   "data.source");
  auto ds = dataset(spec.data.format, spec.data.path, test);
  int64_t n = ds->count;
  const int64_t cap = test ? spec.data.max_test_samples : spec.data.max_train_samples;
  if (cap > 0) n = std::min(n, cap);
  const data::Range r = data::static_block(n, job.world_size, rank);
  ShardData out;
  out.begin = r.begin;
  out.end = r.end;
  out.dataset_size = n;
  const data::Format format = data::parse_format(spec.data.format);  // resolve() checked the name
  if (format == data::Format::kIdx) {
    if (part == "images") {
      out.format = "idx-images";
      out.body = data::encode_idx_images(*ds, r.begin, r.end);
    } else if (part == "labels") {
      out.format = "idx-labels";
      out.body = data::encode_idx_labels(*ds, r.begin, r.end);
    } else {
      throw ApiError(400, "invalid_query", "must be images or labels for IDX datasets", "part");
    }
  } else {
    const bool c100 = format == data::Format::kCifar100;
    out.format = c100 ? "cifar100" : "cifar10";
    out.body = data::encode_cifar_records(*ds, r.begin, r.end, c100);
  }
  const std::string& b = out.body;
  out.sha256 = sha256_hex(b);
  return out;
}

}  // namespace rx::coord
