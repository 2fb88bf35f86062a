#include "coordinator/jobs/job_service.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <regex>
#include <sstream>

#include <spdlog/spdlog.h>

#include "common/config/job_config.h"
#include "common/data/shard_plan.h"
#include "common/util/error.h"
#include "common/util/file_util.h"
#include "coordinator/jobs/api_error.h"
#include "coordinator/jobs/scheduler.h"
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

// [Report types] A progress report is echoed in every job body (progress, loss, ranks), so its fields
// must have the documented types (api/openapi.yaml ProgressReport), or GET /v1/jobs answers bodies
// that break the API's own schema (found by the contract test, tests/contract).
void check_number(const json& b, const char* k, bool integer, const std::string& field) {
  if (!b.contains(k) || b.at(k).is_null()) return;
  if (integer ? b.at(k).is_number_integer() : b.at(k).is_number()) return;
  throw ApiError(400, "invalid_field", integer ? "must be an integer or null" : "must be a number or null",
                 field);
}

void check_ranks(const json& b, const std::string& field) {
  if (!b.contains("ranks")) return;
  if (!b.at("ranks").is_array()) throw ApiError(400, "invalid_field", "must be an array", field);
  for (const auto& r : b.at("ranks")) {
    if (!r.is_object()) throw ApiError(400, "invalid_field", "must be an array of objects", field);
    check_number(r, "rank", true, field + "[].rank");
    check_number(r, "images_per_sec", false, field + "[].images_per_sec");
    check_number(r, "peak_memory_bytes", true, field + "[].peak_memory_bytes");
  }
}

// null where a number is documented: the worker's NaN (nlohmann dumps NaN as null).
void check_progress_report(const json& b) {
  for (const char* k : {"epoch", "epochs", "step", "steps_per_epoch"}) check_number(b, k, true, k);
  for (const char* k : {"loss", "test_accuracy"}) check_number(b, k, false, k);
  check_ranks(b, "ranks");
}

}  // namespace

JobService::JobService(ServiceOptions opts, std::unique_ptr<Launcher> launcher, Tokens tokens)
    : opts_(std::move(opts)), launcher_(std::move(launcher)), tokens_(std::move(tokens)) {
  RX_CHECK(opts_.slots >= 1, "slots must be >= 1");
  if (opts_.in_memory_store) {
    store_ = std::make_unique<JobStore>(":memory:");
  } else {
    std::error_code ec;
    fs::create_directories(opts_.state_dir + "/jobs", ec);
    if (ec) throw IoError(opts_.state_dir, "cannot create state dir: " + ec.message());
    store_ = std::make_unique<JobStore>(opts_.state_dir + "/jobs.db");
  }
}

void JobService::set_self_url(const std::string& url) {
  std::unique_lock lock(mu_);
  opts_.self_url = url;
}

std::string JobService::job_dir(const std::string& id) const { return opts_.state_dir + "/jobs/" + id; }

void JobService::render(const Job& job) {
  auto body = std::make_shared<const std::string>(job_to_json(job).dump());
  std::unique_lock lock(cache_mu_);
  cache_[job.id] = std::move(body);
}

std::shared_ptr<const std::string> JobService::cached(const std::string& id) const {
  std::shared_lock lock(cache_mu_);
  auto it = cache_.find(id);
  return it == cache_.end() ? nullptr : it->second;
}

void JobService::commit(Job& slot, const Job& updated) {
  store_->update(updated);  // throws before memory changes: memory never runs ahead of disk
  slot = updated;
  render(slot);
}

void JobService::recover() {
  std::unique_lock lock(mu_);
  for (Job& j : store_->load_all()) {
    const std::string id = j.id;
    order_[j.seq] = id;
    if (!j.idempotency_key.empty()) idempotency_[j.owner + "\n" + j.idempotency_key] = id;
    auto& slot = jobs_[id];
    slot = j;
    if (launcher_->kind() == "slurm" && j.pid > 0) slot.slurm_job_id = std::to_string(j.pid);
    render(slot);
    if (j.state != JobState::kRunning && !submitted(j)) continue;
    if (launcher_->reattach(LaunchHandle{j.pid, j.pgid})) {
      spdlog::info("job {}: re-attached to running process group {}", id, j.pgid);
      continue;
    }
    Job u = slot;
    u.finished_ms = now_ms();
    if (u.cancel_requested) {
      u.state = JobState::kCancelled;
    } else if (u.result.is_object()) {
      u.state = JobState::kSucceeded;  // it reported its result before the coordinator went down
    } else {
      u.state = JobState::kFailed;
      u.error = "coordinator restarted and the job's processes (pgid " + std::to_string(j.pgid) +
                ") were gone; exit status unknown";
    }
    commit(slot, u);
    spdlog::warn("job {}: not running after restart -> {}", id, to_string(u.state));
  }
}

json JobService::load_config(const json& config_field) const {
  if (config_field.is_object()) return config_field;
  if (!config_field.is_string()) throw ApiError(400, "invalid_field", "must be an object or a preset name", "config");
  const std::string name = config_field.get<std::string>();
  static const std::regex kPreset("^[A-Za-z0-9_-]{1,100}$");
  if (!std::regex_match(name, kPreset))
    throw ApiError(400, "invalid_field", "preset names are [A-Za-z0-9_-]+", "config");
  const std::string path = opts_.configs_dir + "/" + name + ".json";
  if (!fs::exists(path)) throw ApiError(400, "unknown_preset", "no preset named '" + name + "'", "config");
  json j = json::parse(read_file(path), nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw ApiError(500, "bad_preset", "preset " + path + " is not a JSON object");
  return j;
}

SubmitOutcome JobService::submit(const std::string& owner, const json& body, const std::string& idem_key) {
  if (!body.is_object()) throw ApiError(400, "invalid_body", "body must be a JSON object");
  for (auto it = body.begin(); it != body.end(); ++it)
    if (it.key() != "name" && it.key() != "ranks" && it.key() != "config" && it.key() != "overrides")
      throw ApiError(400, "unknown_field", "unknown field '" + it.key() + "'", it.key());
  if (idem_key.size() > 200) throw ApiError(400, "invalid_header", "Idempotency-Key too long", "Idempotency-Key");

  {  // an idempotent retry is answered before validating anything else
    std::shared_lock lock(mu_);
    auto it = idempotency_.find(owner + "\n" + idem_key);
    if (!idem_key.empty() && it != idempotency_.end()) return {false, it->second, cached(it->second)};
  }

  if (!body.contains("ranks")) throw ApiError(400, "missing_field", "is required", "ranks");
  const json& r = body.at("ranks");
  if (!r.is_number_integer()) throw ApiError(400, "invalid_field", "must be an integer", "ranks");
  const int64_t ranks = r.get<int64_t>();
  if (ranks < 1) throw ApiError(400, "invalid_field", "must be >= 1", "ranks");
  if (!fits_capacity(static_cast<int>(std::min<int64_t>(ranks, 1 << 30)), opts_.slots))
    throw ApiError(400, "exceeds_capacity",
                   "needs " + std::to_string(ranks) + " slots; the coordinator has " + std::to_string(opts_.slots),
                   "ranks");
  std::string name;
  if (body.contains("name")) {
    if (!body.at("name").is_string()) throw ApiError(400, "invalid_field", "must be a string", "name");
    name = body.at("name").get<std::string>();
    if (name.size() > 200) throw ApiError(400, "invalid_field", "at most 200 characters", "name");
  }
  if (!body.contains("config")) throw ApiError(400, "missing_field", "is required", "config");
  if (name.empty()) name = body.at("config").is_string() ? body.at("config").get<std::string>() : "job";
  std::vector<config::Override> overrides;
  if (body.contains("overrides")) {
    const json& o = body.at("overrides");
    if (!o.is_object()) throw ApiError(400, "invalid_field", "must be an object of dotted keys", "overrides");
    for (auto it = o.begin(); it != o.end(); ++it) overrides.push_back({it.key(), it.value()});
  }
  json resolved;
  try {
    resolved = config::resolve(load_config(body.at("config")), overrides);
  } catch (const ConfigError& e) {
    throw ApiError(400, "invalid_config", e.message(), e.field());
  }

  Job job;
  job.id = "j" + random_hex(6);
  job.name = name;
  job.owner = owner;
  job.world_size = static_cast<int>(ranks);
  job.config = std::move(resolved);
  job.idempotency_key = idem_key;
  job.created_ms = now_ms();

  std::unique_lock lock(mu_);
  if (!idem_key.empty()) {  // lost a race with a concurrent retry
    auto it = idempotency_.find(owner + "\n" + idem_key);
    if (it != idempotency_.end()) return {false, it->second, cached(it->second)};
  }
  store_->insert(job);
  order_[job.seq] = job.id;
  if (!idem_key.empty()) idempotency_[owner + "\n" + idem_key] = job.id;
  Job& slot = jobs_[job.id];
  slot = job;
  render(slot);
  spdlog::info("job {} submitted by {}: {} ranks, name '{}'", job.id, owner, job.world_size, job.name);
  schedule_locked();
  return {true, job.id, cached(job.id)};
}

Job& JobService::find_or_404(const std::string& id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) throw ApiError(404, "not_found", "no job '" + id + "'", "id");
  return it->second;
}
const Job& JobService::find_or_404(const std::string& id) const {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) throw ApiError(404, "not_found", "no job '" + id + "'", "id");
  return it->second;
}

std::shared_ptr<const std::string> JobService::job_body(const std::string& id) const { return cached(id); }

std::optional<Job> JobService::get(const std::string& id) const {
  std::shared_lock lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  return it->second;
}

json JobService::list(std::optional<JobState> state, size_t limit, size_t offset) const {
  std::shared_lock lock(mu_);
  json arr = json::array();
  size_t matched = 0;
  for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
    const Job& j = jobs_.at(it->second);
    if (state && j.state != *state) continue;
    if (matched >= offset && arr.size() < limit) arr.push_back(job_to_json(j));
    ++matched;
  }
  json next = offset + arr.size() < matched ? json(offset + arr.size()) : json(nullptr);
  return json{{"jobs", arr}, {"total", matched}, {"offset", offset}, {"limit", limit}, {"next_offset", next}};
}

std::shared_ptr<const std::string> JobService::cancel(const std::string& owner, const std::string& id) {
  std::unique_lock lock(mu_);
  Job& slot = find_or_404(id);
  if (tokens_.enabled() && slot.owner != owner)
    throw ApiError(403, "forbidden", "job '" + id + "' belongs to " + slot.owner);
  if (is_terminal(slot.state))
    throw ApiError(409, "conflict", "job '" + id + "' already " + to_string(slot.state));
  Job u = slot;
  if (u.state == JobState::kQueued && !submitted(u)) {
    u.state = JobState::kCancelled;
    u.finished_ms = now_ms();
    commit(slot, u);
  } else if (!u.cancel_requested) {
    u.cancel_requested = true;
    u.cancel_ms = now_ms();
    commit(slot, u);
    launcher_->cancel(LaunchHandle{u.pid, u.pgid}, false);
    spdlog::info("job {}: cancel requested by {} (SIGTERM to pgid {})", id, owner, u.pgid);
  }
  return cached(id);
}

void JobService::check_job_secret(const std::string& id, const std::string& secret) const {
  std::shared_lock lock(mu_);
  const Job& j = find_or_404(id);
  if (j.secret_hash.empty() || !ct_equal(sha256_hex(secret), j.secret_hash))
    throw ApiError(401, "unauthorized", "missing or wrong X-Job-Secret", "X-Job-Secret");
}

void JobService::report(const std::string& id, const std::string& secret, const json& body) {
  std::unique_lock lock(mu_);
  Job& slot = find_or_404(id);
  if (slot.secret_hash.empty() || !ct_equal(sha256_hex(secret), slot.secret_hash))
    throw ApiError(401, "unauthorized", "missing or wrong X-Job-Secret");
  if (!body.is_object() || !body.contains("type") || !body.at("type").is_string())
    throw ApiError(400, "invalid_field", "must be \"progress\" or \"result\"", "type");
  const std::string type = body.at("type").get<std::string>();
  Job u = slot;
  if (type == "progress") {
    check_progress_report(body);
    u.last_progress = body;
  } else if (type == "result") {
    if (!body.contains("record") || !body.at("record").is_object())
      throw ApiError(400, "invalid_field", "must be an object", "record");
    check_number(body.at("record"), "final_test_accuracy", false, "record.final_test_accuracy");
    check_ranks(body.at("record"), "record.ranks");
    u.result = body.at("record");
  } else {
    throw ApiError(400, "invalid_field", "must be \"progress\" or \"result\"", "type");
  }
  store_->append_report(u, now_ms(), body.dump());
  slot = u;
  render(slot);
}

json JobService::metrics(const std::string& id) {
  std::unique_lock lock(mu_);  // the store is single-connection
  find_or_404(id);
  json points = json::array();
  for (const auto& [ms, text] : store_->reports(id)) {
    json b = json::parse(text, nullptr, false);
    if (!b.is_object() || b.value("type", "") != "progress") continue;
    b.erase("type");
    b["received_at"] = iso8601(ms);
    points.push_back(std::move(b));
  }
  return json{{"job_id", id}, {"points", points}};
}

json JobService::result(const std::string& id) const {
  std::shared_lock lock(mu_);
  const Job& j = find_or_404(id);
  if (!j.result.is_object()) throw ApiError(404, "no_result", "job '" + id + "' has no result yet");
  return j.result;
}

std::string JobService::logs(const std::string& id, int tail) const {
  {
    std::shared_lock lock(mu_);
    find_or_404(id);
  }
  // Read backwards in blocks until `tail` lines are covered, so a huge log costs O(tail), not O(size).
  std::ifstream in(job_dir(id) + "/worker.log", std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  const int64_t size = in.tellg();
  int64_t start = size;
  std::string buf;
  constexpr int64_t kBlock = 64 << 10;
  while (start > 0) {
    const int64_t n = std::min(kBlock, start);
    start -= n;
    std::string chunk(static_cast<size_t>(n), '\0');
    in.seekg(start);
    in.read(chunk.data(), n);
    buf.insert(0, chunk);
    // tail lines need tail+1 newlines before the last (possibly unterminated) line's end.
    if (std::count(buf.begin(), buf.end(), '\n') > tail) break;
  }
  size_t pos = buf.size();
  if (pos > 0 && buf[pos - 1] == '\n') --pos;  // the final newline ends the last line
  int lines = 0;
  while (pos > 0) {
    if (buf[pos - 1] == '\n' && ++lines == tail) break;
    --pos;
  }
  std::string out = buf.substr(pos);
  if (!out.empty() && out.back() != '\n') out += '\n';
  return out;
}

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
                   "cannot determine the training set size for data.format '" + format +
                       "'; pass ?dataset_size=N",
                   "dataset_size");
  const json& cap = at_path(job.config, "data.max_train_samples");
  if (cap.is_number_integer() && cap.get<int64_t>() > 0) n = std::min(*n, cap.get<int64_t>());
  return *n;
}

json JobService::shard(const std::string& id, int rank, int64_t epoch, std::optional<int64_t> dataset_size) {
  Job job;
  {
    std::shared_lock lock(mu_);
    job = find_or_404(id);
  }
  return compute_shard(job, rank, epoch, dataset_size);
}

json JobService::compute_shard(const Job& job, int rank, int64_t epoch, std::optional<int64_t> dataset_size) const {
  if (rank < 0 || rank >= job.world_size)
    throw ApiError(404, "not_found", "rank must be in [0, " + std::to_string(job.world_size) + ")", "rank");
  if (epoch < 0) throw ApiError(400, "invalid_field", "must be >= 0", "epoch");
  data::ShardSpec spec;
  spec.dataset_size = dataset_size ? *dataset_size : dataset_size_for(job);
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
    return json{{"rank", rank},       {"world_size", job.world_size}, {"epoch", epoch},
                {"mode", data::to_string(spec.mode)}, {"dataset_size", spec.dataset_size},
                {"indices", std::move(indices)},     {"sha256", sha}};
  } catch (const ConfigError& e) {
    throw ApiError(400, "invalid_field", e.message(), e.field().empty() ? "dataset_size" : e.field());
  }
}

std::shared_ptr<const data::Dataset> JobService::dataset(const std::string& format, const std::string& path,
                                                         bool test) {
  std::lock_guard<std::mutex> lock(data_mu_);
  auto& slot = datasets_[format + "\n" + path + (test ? "\ntest" : "")];
  if (!slot) {
    try {
      slot = std::make_shared<const data::Dataset>(
          data::load_dataset(format, path, test ? data::Split::kTest : data::Split::kTrain));
    } catch (const Error& e) {
      throw ApiError(500, "dataset_unreadable", e.what(), "data.path");
    }
    spdlog::info("loaded {} dataset {} ({} samples) for shard serving", format, path, slot->count);
  }
  return slot;
}

namespace {
void put_be32(std::string& out, uint32_t v) {
  out += static_cast<char>(v >> 24);
  out += static_cast<char>(v >> 16);
  out += static_cast<char>(v >> 8);
  out += static_cast<char>(v);
}
}  // namespace

ShardData JobService::shard_data(const std::string& id, const std::string& secret, int rank, const std::string& part,
                                 bool test) {
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
      if (count > 0) b.append(reinterpret_cast<const char*>(ds->sample(r.begin)), static_cast<size_t>(count * sb));
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

int JobService::busy_slots_locked() const {
  int busy = 0;
  for (const auto& [id, j] : jobs_)
    if (j.state == JobState::kRunning) busy += j.world_size;
  return busy;
}

void JobService::schedule_locked() {
  std::vector<QueuedJob> queue;
  for (const auto& [seq, id] : order_) {
    const Job& j = jobs_.at(id);
    if (j.state == JobState::kQueued && !submitted(j)) queue.push_back({id, j.world_size});
  }
  if (queue.empty()) return;
  for (const auto& id : pick_fifo(queue, opts_.slots - busy_slots_locked())) start_locked(jobs_.at(id));
}

void JobService::start_locked(Job& slot) {
  Job u = slot;
  const std::string dir = job_dir(u.id);
  const std::string secret = random_hex(32);
  try {
    std::error_code ec;
    fs::create_directories(dir + "/run", ec);
    if (ec) throw IoError(dir, "cannot create job dir: " + ec.message());
    write_file_atomic(dir + "/config.json", u.config.dump(2) + "\n");
    // The plan every rank will compute for epoch 0, written for people debugging a run.
    try {
      json plan = json::array();
      for (int r = 0; r < u.world_size; ++r) {
        json s = compute_shard(u, r, 0, std::nullopt);
        plan.push_back({{"rank", r}, {"count", s["indices"].size()}, {"sha256", s["sha256"]}});
      }
      write_file_atomic(dir + "/shard_plan.json", plan.dump(2) + "\n");
    } catch (const std::exception&) {
      // dataset size unknown here (synthetic data, files elsewhere): workers can still ask with ?dataset_size=
    }
    const LaunchHandle h = launcher_->start(LaunchSpec{u.id, dir, u.world_size, secret, opts_.self_url});
    u.pid = h.pid;
    u.pgid = h.pgid;
    if (launcher_->kind() == "slurm") u.slurm_job_id = std::to_string(h.pid);
    u.state = JobState::kRunning;
    u.started_ms = now_ms();
    u.secret_hash = sha256_hex(secret);
    spdlog::info("job {}: started, pid {} ({} ranks)", u.id, h.pid, u.world_size);
  } catch (const std::exception& e) {
    u.state = JobState::kFailed;
    u.finished_ms = now_ms();
    u.error = std::string("launch failed: ") + e.what();
    spdlog::error("job {}: {}", u.id, u.error);
  }
  commit(slot, u);
}

void JobService::finish(const std::string& id, const ExitInfo& ex) {
  std::unique_lock lock(mu_);
  Job& slot = find_or_404(id);
  if (slot.state != JobState::kRunning && !submitted(slot)) return;
  Job u = slot;
  u.finished_ms = now_ms();
  u.exit_code = ex.exit_code;
  u.error.clear();  // a Slurm pending reason from before the end is no longer true
  if (u.cancel_requested || ex.cancelled) {
    u.state = JobState::kCancelled;
  } else if (ex.exit_code && *ex.exit_code == 0) {
    u.state = JobState::kSucceeded;
  } else if (!ex.exit_code && ex.reason.rfind("exit status unknown", 0) == 0 && u.result.is_object()) {
    u.state = JobState::kSucceeded;
  } else {
    u.state = JobState::kFailed;
    u.error = ex.reason.empty() ? "worker failed" : ex.reason;
  }
  commit(slot, u);
  spdlog::info("job {}: {} (exit {})", id, to_string(u.state), ex.exit_code ? std::to_string(*ex.exit_code) : "?");
}

// [External queue] A Slurm job can wait in Slurm's queue after submission (PENDING) and go back to it
// (requeued after a checkpoint). Such a job is "queued" with its pid (the Slurm job id) set: the
// scheduler never starts it again, tick() keeps polling it, and its error says why it waits.
void JobService::update_live(const std::string& id, const LiveInfo& live) {
  std::unique_lock lock(mu_);
  Job& slot = find_or_404(id);
  if (is_terminal(slot.state)) return;
  const JobState want = live.queued ? JobState::kQueued : JobState::kRunning;
  if (slot.state == want && slot.error == live.detail) return;
  Job u = slot;
  u.state = want;
  u.error = live.detail;
  commit(slot, u);
}

void JobService::tick() {
  struct Running {
    std::string id;
    LaunchHandle h;
    bool cancel_requested;
    int64_t cancel_ms;
  };
  std::vector<Running> running;
  {
    std::shared_lock lock(mu_);
    for (const auto& [id, j] : jobs_)
      if (j.state == JobState::kRunning || submitted(j))
        running.push_back({id, {j.pid, j.pgid}, j.cancel_requested, j.cancel_ms});
  }
  // /proc scans and waitid happen outside the lock; only state changes take it.
  for (const auto& r : running) {
    if (auto ex = launcher_->poll(r.h)) {
      finish(r.id, *ex);
      continue;
    }
    update_live(r.id, launcher_->live_info(r.h));
    if (r.cancel_requested && now_ms() - r.cancel_ms > opts_.cancel_grace_ms) {
      launcher_->cancel(r.h, true);
    }
  }
  std::unique_lock lock(mu_);
  schedule_locked();
}

std::string JobService::prometheus() const {
  std::shared_lock lock(mu_);
  std::map<std::string, int> by_state;
  for (auto st : {JobState::kQueued, JobState::kRunning, JobState::kSucceeded, JobState::kFailed, JobState::kCancelled})
    by_state[to_string(st)] = 0;
  std::ostringstream os;
  for (const auto& [id, j] : jobs_) by_state[to_string(j.state)]++;
  os << "# HELP rx_jobs Jobs by state.\n# TYPE rx_jobs gauge\n";
  for (const auto& [st, n] : by_state) os << "rx_jobs{state=\"" << st << "\"} " << n << "\n";
  const int busy = busy_slots_locked();
  os << "# HELP rx_slots Slots (one rank each) by use.\n# TYPE rx_slots gauge\n";
  os << "rx_slots{state=\"busy\"} " << busy << "\nrx_slots{state=\"free\"} " << (opts_.slots - busy) << "\n";
  os << "# HELP rx_job_images_per_second Sum over ranks of the last reported images/s of a running job.\n"
        "# TYPE rx_job_images_per_second gauge\n";
  for (const auto& [id, j] : jobs_) {
    if (j.state != JobState::kRunning) continue;
    double ips = 0;
    if (j.last_progress.is_object() && j.last_progress.contains("ranks") && j.last_progress["ranks"].is_array())
      for (const auto& r : j.last_progress["ranks"])
        if (r.is_object() && r.contains("images_per_sec") && r["images_per_sec"].is_number())
          ips += r["images_per_sec"].get<double>();
    os << "rx_job_images_per_second{job=\"" << id << "\"} " << ips << "\n";
  }
  return os.str();
}

}  // namespace rx::coord
