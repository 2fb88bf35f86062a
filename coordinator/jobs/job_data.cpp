// [JobService: data] The shard index plan (its dataset size read from the job's own files) and
// shard bytes served from a small canonical-path cache.
#include <spdlog/spdlog.h>
#include <zlib.h>

#include <algorithm>
#include <deque>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/data/shard_plan.h"
#include "common/util/error.h"
#include "coordinator/jobs/api_error.h"
#include "coordinator/jobs/job_service.h"
#include "coordinator/util/util.h"

namespace rx::coord {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const json& at_path(const json& j, const std::string& dotted) {
  static const json kNull;
  const json* cur = &j;
  std::stringstream ss(dotted);
  std::string part;
  while (std::getline(ss, part, '.')) {
    if (!cur->is_object() || !cur->contains(part)) return kNull;
    cur = &cur->at(part);
  }
  return *cur;
}

// Sample count in an IDX images file (plain or .gz): big-endian uint32 at offset 4.
std::optional<int64_t> idx_count(const std::string& dir) {
  for (const char* name : {"train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"}) {
    const std::string p = dir + "/" + name;
    if (!fs::exists(p)) continue;
    gzFile f = gzopen(p.c_str(), "rb");
    if (!f) continue;
    unsigned char hdr[8];
    int n = gzread(f, hdr, 8);
    gzclose(f);
    if (n != 8) continue;
    return (int64_t{hdr[4]} << 24) | (int64_t{hdr[5]} << 16) | (int64_t{hdr[6]} << 8) | int64_t{hdr[7]};
  }
  return std::nullopt;
}

}  // namespace

int64_t JobService::dataset_size_for(const Job& job) const {
  const std::string format = at_path(job.config, "data.format").is_string()
                                 ? at_path(job.config, "data.format").get<std::string>()
                                 : "";
  const std::string path =
      at_path(job.config, "data.path").is_string() ? at_path(job.config, "data.path").get<std::string>() : "";
  std::optional<int64_t> n;
  std::error_code ec;
  if (format == "cifar10" || format == "synthetic") {  // data_batch_1..5.bin, 1 + 3072 bytes a record
    int64_t bytes = 0;
    for (int b = 1; b <= 5; ++b) {
      auto sz = fs::file_size(path + "/data_batch_" + std::to_string(b) + ".bin", ec);
      if (!ec) bytes += static_cast<int64_t>(sz);
    }
    if (bytes > 0) n = bytes / 3073;
  } else if (format == "cifar100") {  // train.bin, 2 + 3072 bytes a record
    auto sz = fs::file_size(path + "/train.bin", ec);
    if (!ec && sz > 0) n = static_cast<int64_t>(sz) / 3074;
  } else if (format == "idx") {
    n = idx_count(path);
  }
  if (!n)
    throw ApiError(422, "dataset_size_unknown",
                   "cannot determine the training set size for data.format '" + format + "' from data.path",
                   "data.path");
  const json& cap = at_path(job.config, "data.max_train_samples");
  if (cap.is_number_integer() && cap.get<int64_t>() > 0) n = std::min(*n, cap.get<int64_t>());
  return *n;
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
  data::ShardSpec spec;
  spec.dataset_size = dataset_size_for(job);
  spec.world_size = job.world_size;
  spec.rank = rank;
  spec.epoch = epoch;
  const json& seed = at_path(job.config, "training.seed");
  spec.seed = seed.is_number_integer() ? seed.get<uint64_t>() : 0;
  const json& mode = at_path(job.config, "data.shard_mode");
  try {
    spec.mode = data::parse_shard_mode(mode.is_string() ? mode.get<std::string>() : "global");
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

namespace {
void put_be32(std::string& out, uint32_t v) {
  out += static_cast<char>(v >> 24);
  out += static_cast<char>(v >> 16);
  out += static_cast<char>(v >> 8);
  out += static_cast<char>(v);
}
}  // namespace

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
  const json& source = at_path(job.config, "data.source");
  if (!source.is_string() || source.get<std::string>() != "coordinator")
    throw ApiError(409, "shared_dataset", "job reads a shared dataset (data.source is not \"coordinator\")",
                   "data.source");
  const std::string format = at_path(job.config, "data.format").get<std::string>();
  auto ds = dataset(format, at_path(job.config, "data.path").get<std::string>(), test);
  int64_t n = ds->count;
  const json& cap = at_path(job.config, test ? "data.max_test_samples" : "data.max_train_samples");
  if (cap.is_number_integer() && cap.get<int64_t>() > 0) n = std::min(n, cap.get<int64_t>());
  const data::Range r = data::static_block(n, job.world_size, rank);
  ShardData out;
  out.begin = r.begin;
  out.end = r.end;
  out.dataset_size = n;
  const int64_t count = r.end - r.begin;
  const int64_t sb = ds->sample_bytes();
  std::string& b = out.body;
  if (format == "idx") {
    if (part == "images") {
      out.format = "idx-images";
      b.reserve(static_cast<size_t>(16 + count * sb));
      put_be32(b, 0x00000803);
      put_be32(b, static_cast<uint32_t>(count));
      put_be32(b, static_cast<uint32_t>(ds->height));
      put_be32(b, static_cast<uint32_t>(ds->width));
      if (count > 0)
        b.append(reinterpret_cast<const char*>(ds->sample(r.begin)), static_cast<size_t>(count * sb));
    } else if (part == "labels") {
      out.format = "idx-labels";
      put_be32(b, 0x00000801);
      put_be32(b, static_cast<uint32_t>(count));
      for (int64_t i = r.begin; i < r.end; ++i) b += static_cast<char>(ds->labels[static_cast<size_t>(i)]);
    } else {
      throw ApiError(400, "invalid_query", "must be images or labels for IDX datasets", "part");
    }
  } else {  // CIFAR binary records: [coarse,] label, CHW pixels
    const bool c100 = format == "cifar100";
    out.format = c100 ? "cifar100" : "cifar10";
    b.reserve(static_cast<size_t>(count * (sb + (c100 ? 2 : 1))));
    for (int64_t i = r.begin; i < r.end; ++i) {
      const int32_t label = ds->labels[static_cast<size_t>(i)];
      if (c100) b += static_cast<char>(label / 5);  // same stand-in coarse label as write_cifar100
      b += static_cast<char>(label);
      b.append(reinterpret_cast<const char*>(ds->sample(i)), static_cast<size_t>(sb));
    }
  }
  out.sha256 = sha256_hex(b);
  return out;
}

}  // namespace rx::coord
