#include "coordinator/http/router.h"

#include <spdlog/spdlog.h>

#include <boost/asio/ip/address.hpp>
#include <cctype>
#include <charconv>
#include <chrono>
#include <filesystem>
#include <vector>

#include "common/util/error.h"
#include "common/util/file_util.h"
#include "coordinator/http/json_guard.h"
#include "coordinator/http/ui_assets.h"
#include "coordinator/jobs/api_error.h"
#include "coordinator/util/util.h"

namespace rx::coord {

namespace http = boost::beast::http;
using nlohmann::json;

namespace {

struct Target {
  std::vector<std::string> parts;  // path segments
  std::vector<std::pair<std::string, std::string>> query;
  std::optional<std::string> param(const std::string& key) const {
    for (const auto& [k, v] : query)
      if (k == key) return v;
    return std::nullopt;
  }
};

Target split_target(std::string_view t) {
  Target out;
  auto q = t.find('?');
  std::string_view path = t.substr(0, q);
  size_t i = 0;
  while (i < path.size()) {
    while (i < path.size() && path[i] == '/') ++i;
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    if (j > i) out.parts.emplace_back(path.substr(i, j - i));
    i = j;
  }
  if (q != std::string_view::npos) {
    std::string_view qs = t.substr(q + 1);
    size_t p = 0;
    while (p <= qs.size()) {
      size_t amp = qs.find('&', p);
      if (amp == std::string_view::npos) amp = qs.size();
      std::string_view kv = qs.substr(p, amp - p);
      if (!kv.empty()) {
        auto eq = kv.find('=');
        out.query.emplace_back(std::string(kv.substr(0, eq)),
                               eq == std::string_view::npos ? std::string() : std::string(kv.substr(eq + 1)));
      }
      p = amp + 1;
    }
  }
  return out;
}

int64_t int_param(const Target& t, const std::string& key, int64_t def, int64_t lo, int64_t hi) {
  auto v = t.param(key);
  if (!v) return def;
  int64_t out = 0;
  auto [ptr, ec] = std::from_chars(v->data(), v->data() + v->size(), out);
  if (ec != std::errc() || ptr != v->data() + v->size() || v->empty())
    throw ApiError(400, "invalid_query", "must be an integer", key);
  if (out < lo || out > hi)
    throw ApiError(400, "invalid_query",
                   "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", key);
  return out;
}

Response make(const Request& req, http::status st, std::string body, const char* type = "application/json") {
  Response res{st, req.version()};
  res.set(http::field::server, "resnext-coordinator");
  res.set(http::field::content_type, type);
  res.keep_alive(req.keep_alive());
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

Response method_not_allowed(const Request& req, const char* allow) {
  Response res = error_response(405, "method_not_allowed",
                                std::string(req.method_string()) + " not allowed; use " + allow, "",
                                req.version(), req.keep_alive());
  res.set(http::field::allow, allow);
  return res;
}

json parse_body(const Request& req) {
  const std::string& b = req.body();
  if (max_json_depth(b) > kMaxJsonDepth)
    throw ApiError(400, "too_deep", "JSON nested deeper than " + std::to_string(kMaxJsonDepth));
  // nlohmann stops at a NUL byte and would take "{...}\0junk" as valid; a NUL is never valid JSON.
  json j =
      b.find('\0') == std::string::npos ? json::parse(b, nullptr, false) : json(json::value_t::discarded);
  if (j.is_discarded()) throw ApiError(400, "malformed_json", "request body is not valid JSON");
  return j;
}

// [Read access] With --token-file every route but /healthz needs a token (reads included); a user
// sees only their own jobs, an admin token every job. Workers use their per-job secret instead.
Principal require_user(const Request& req, ServiceState& st) {
  const auto auth = req[http::field::authorization];
  auto who = st.jobs.tokens().identify(std::string_view(auth.data(), auth.size()));
  if (!who) throw ApiError(401, "unauthorized", "missing or invalid bearer token", "Authorization");
  return *who;
}

Principal require_reader(const Request& req, ServiceState& st, const std::string& id) {
  Principal who = require_user(req, st);
  st.jobs.check_visible(who, id);
  return who;
}

// [Trace download] The merged Chrome trace the worker's rank 0 wrote (output.trace). The path is built
// from the job's own folder and a fixed name (the id is a known job's, checked by require_reader), and
// only a regular file is served: a symlink there is treated as no trace.
Response trace_response(const Request& req, ServiceState& st, const std::string& id) {
  namespace fs = std::filesystem;
  const std::string path = st.jobs.job_dir(id) + "/run/trace.json";
  std::error_code ec;
  constexpr uintmax_t kMaxBytes = 512u << 20;  // the worker caps its events far below this
  if (!fs::is_regular_file(fs::symlink_status(path, ec)) || fs::file_size(path, ec) > kMaxBytes || ec)
    throw ApiError(404, "not_found",
                   "job '" + id +
                       "' has no trace (submit it with output.trace: true; rank 0 writes the trace "
                       "when the training ends)",
                   "id");
  auto res = make(req, http::status::ok, read_file(path));
  res.set(http::field::content_disposition, "attachment; filename=\"trace-" + id + ".json\"");
  return res;
}

std::string lower(boost::beast::string_view s) {
  std::string out(s.data(), s.size());
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool is_loopback_host(const std::string& host) {  // "name[:port]", "[v6][:port]"
  std::string name = host;
  if (!name.empty() && name.front() == '[') {
    name = name.substr(1, name.find(']') == std::string::npos ? std::string::npos : name.find(']') - 1);
  } else if (const auto colon = name.rfind(':'); colon != std::string::npos) {
    name = name.substr(0, colon);
  }
  if (name == "localhost") return true;
  boost::system::error_code ec;
  const auto address = boost::asio::ip::make_address(name, ec);
  return !ec && address.is_loopback();
}

// [Cross-site] A browser on this machine can reach the coordinator too, and any page it opens may send
// requests to 127.0.0.1: a form or a simple fetch() needs no permission to POST, and a page whose name
// was rebound to 127.0.0.1 (DNS rebinding) may even read the answers. Without tokens that page would
// be an administrator. So, before any route:
// - a request that carries an Origin must come from the page this Host serves (the dashboard);
// - a POST body must be declared JSON (a form's types are refused; JSON from another origin needs a
//   CORS preflight, which this server never grants);
// - without tokens on a loopback address, the Host must be a loopback name: a rebound page's is not.
void guard_cross_site(const Request& req, const ServiceState& st) {
  const std::string host = lower(req[http::field::host]);
  if (const auto origin = req[http::field::origin]; !origin.empty()) {
    std::string from = lower(origin);
    for (const char* scheme : {"http://", "https://"})
      if (from.rfind(scheme, 0) == 0) from = from.substr(std::string(scheme).size());
    if (from != host)
      throw ApiError(403, "cross_origin",
                     "requests from the page at " + std::string(origin) + " are not accepted here", "Origin");
  }
  if (req.method() == http::verb::post) {
    const std::string type = lower(req[http::field::content_type]);
    if (!type.empty() && type.rfind("application/json", 0) != 0)
      throw ApiError(415, "unsupported_media_type",
                     "a POST body must be JSON (Content-Type: application/json)", "Content-Type");
  }
  if (st.loopback_host_only && !host.empty() && !is_loopback_host(host))
    throw ApiError(403, "bad_host",
                   "Host '" + host +
                       "' is not a loopback name: without tokens this coordinator answers only "
                       "127.0.0.1, ::1 or localhost",
                   "Host");
}

Response dispatch(const Request& req, ServiceState& st, RouteId& rid) {
  guard_cross_site(req, st);
  const Target t = split_target(std::string_view(req.target().data(), req.target().size()));
  const auto& p = t.parts;
  const auto m = req.method();
  const bool get = m == http::verb::get || m == http::verb::head;
  const bool post = m == http::verb::post;

  if (p.size() == 1 && p[0] == "healthz") {
    rid = RouteId::kHealthz;
    if (!get) return method_not_allowed(req, "GET");
    return make(req, http::status::ok, R"({"status":"ok"})");
  }
  if (p.size() == 1 && p[0] == "metrics") {
    rid = RouteId::kMetrics;
    if (!get) return method_not_allowed(req, "GET");
    const Principal who = require_user(req, st);  // job ids and throughput are not for strangers
    return make(req, http::status::ok, st.jobs.prometheus(who) + st.http.prometheus(),
                "text/plain; version=0.0.4");
  }
  if (p.empty() || p[0] == "ui") {  // [Dashboard] static pages, no token needed to load them
    rid = RouteId::kUi;
    return ui::serve(req, p);
  }
  if (p.size() < 2 || p[0] != "v1" || p[1] != "jobs") {
    rid = RouteId::kNotFound;
    throw ApiError(404, "not_found", "no route for " + std::string(req.target()));
  }
  if (p.size() == 2) {
    if (get) {
      rid = RouteId::kJobsList;
      const Principal who = require_user(req, st);
      std::optional<JobState> state;
      if (auto s = t.param("state")) {
        state = parse_job_state(*s);
        if (!state) throw ApiError(400, "invalid_query", "unknown state '" + *s + "'", "state");
      }
      const auto limit = int_param(t, "limit", 50, 1, 1000);
      const auto offset = int_param(t, "offset", 0, 0, int64_t{1} << 40);
      return make(
          req, http::status::ok,
          dump_json(st.jobs.list(state, static_cast<size_t>(limit), static_cast<size_t>(offset), &who)));
    }
    if (post) {
      rid = RouteId::kJobsSubmit;
      const std::string owner = require_user(req, st).name;
      const json body = parse_body(req);
      auto out = st.jobs.submit(owner, body, std::string(req["Idempotency-Key"]));
      auto res = make(req, out.created ? http::status::created : http::status::ok, *out.body);
      res.set(http::field::location, "/v1/jobs/" + out.id);
      return res;
    }
    rid = RouteId::kMethodNotAllowed;
    return method_not_allowed(req, "GET, POST");
  }
  const std::string& id = p[2];
  if (p.size() == 3) {
    rid = RouteId::kJobGet;
    if (!get) return method_not_allowed(req, "GET");
    require_reader(req, st, id);
    auto body = st.jobs.job_body(id);
    if (!body) throw ApiError(404, "not_found", "no job '" + id + "'", "id");
    return make(req, http::status::ok, *body);
  }
  const std::string& sub = p[3];
  if (p.size() == 4 && sub == "metrics") {
    rid = RouteId::kJobMetrics;
    if (!get) return method_not_allowed(req, "GET");
    require_reader(req, st, id);
    return make(req, http::status::ok, dump_json(st.jobs.metrics(id)));
  }
  if (p.size() == 4 && sub == "logs") {
    rid = RouteId::kJobLogs;
    if (!get) return method_not_allowed(req, "GET");
    require_reader(req, st, id);
    const auto tail = int_param(t, "tail", 100, 1, 100000);
    return make(req, http::status::ok, st.jobs.logs(id, static_cast<int>(tail)), "text/plain; charset=utf-8");
  }
  if (p.size() == 4 && sub == "result") {
    rid = RouteId::kJobResult;
    if (!get) return method_not_allowed(req, "GET");
    require_reader(req, st, id);
    return make(req, http::status::ok, dump_json(st.jobs.result(id)));
  }
  if (p.size() == 4 && sub == "trace") {
    rid = RouteId::kJobTrace;
    if (!get) return method_not_allowed(req, "GET");
    require_reader(req, st, id);
    return trace_response(req, st, id);
  }
  if (p.size() == 4 && sub == "cancel") {
    rid = RouteId::kJobCancel;
    if (!post) return method_not_allowed(req, "POST");
    const Principal who = require_user(req, st);
    // Cancel takes no parameters. A body is optional, but one that is sent is checked like any other
    // (clients send "{}"): junk or a field this route would ignore is an error, not silently accepted.
    if (!req.body().empty()) {
      const json b = parse_body(req);
      if (!b.is_object()) throw ApiError(400, "invalid_body", "must be a JSON object ({})");
      if (!b.empty()) throw ApiError(400, "unknown_field", "cancel takes no fields", b.begin().key());
    }
    auto body = st.jobs.cancel(who, id);
    return make(req, http::status::accepted, *body);
  }
  if (p.size() == 4 && sub == "reports") {
    rid = RouteId::kJobReports;
    if (!post) return method_not_allowed(req, "POST");
    // Authenticated by the per-job secret, not a user token; checked before the body is looked at.
    const std::string secret(req["X-Job-Secret"]);
    if (secret.empty()) throw ApiError(401, "unauthorized", "missing X-Job-Secret", "X-Job-Secret");
    st.jobs.check_job_secret(id, secret);  // 401 (missing job or wrong secret) before the body is looked at
    const json body = parse_body(req);
    st.jobs.report(id, secret, body);
    return make(req, http::status::accepted, R"({"accepted":true})");
  }
  if (p.size() == 5 && sub == "shards") {
    rid = RouteId::kJobShard;
    if (!get) return method_not_allowed(req, "GET");
    int rank = 0;
    auto [ptr, ec] = std::from_chars(p[4].data(), p[4].data() + p[4].size(), rank);
    if (ec != std::errc() || ptr != p[4].data() + p[4].size())
      throw ApiError(400, "invalid_path", "rank must be an integer", "rank");
    // The job's workers ask with their secret; people with a token that may read the job.
    const auto secret = req["X-Job-Secret"];
    if (!secret.empty())
      st.jobs.check_job_secret(id, std::string(secret.data(), secret.size()));
    else
      require_reader(req, st, id);
    if (!t.param("epoch")) throw ApiError(400, "missing_query", "is required", "epoch");
    const auto epoch = int_param(t, "epoch", 0, 0, int64_t{1} << 40);
    // The size is the job's (read from its data), never the caller's: a caller-chosen size made the
    // coordinator allocate in proportion to it.
    if (t.param("dataset_size"))
      throw ApiError(400, "invalid_query", "not accepted: the dataset size comes from the job's data",
                     "dataset_size");
    return make(req, http::status::ok, dump_json(st.jobs.shard(id, rank, epoch)));
  }
  if (p.size() == 6 && sub == "shards" && p[5] == "data") {
    rid = RouteId::kJobShardData;
    if (!get) return method_not_allowed(req, "GET");
    int rank = 0;
    auto [ptr, ec] = std::from_chars(p[4].data(), p[4].data() + p[4].size(), rank);
    if (ec != std::errc() || ptr != p[4].data() + p[4].size())
      throw ApiError(400, "invalid_path", "rank must be an integer", "rank");
    const auto secret = req["X-Job-Secret"];
    const std::string split = t.param("split").value_or("train");
    if (split != "train" && split != "test")
      throw ApiError(400, "invalid_query", "must be train or test", "split");
    auto d = st.jobs.shard_data(id, std::string(secret.data(), secret.size()), rank,
                                t.param("part").value_or(""), split == "test");
    auto res = make(req, http::status::ok, std::move(d.body), "application/octet-stream");
    res.set("X-Content-SHA256", d.sha256);
    res.set("X-Shard-Format", d.format);
    res.set("X-Shard-Begin", std::to_string(d.begin));
    res.set("X-Shard-End", std::to_string(d.end));
    res.set("X-Dataset-Size", std::to_string(d.dataset_size));
    return res;
  }
  rid = RouteId::kNotFound;
  throw ApiError(404, "not_found", "no route for " + std::string(req.target()));
}

}  // namespace

Response error_response(int status, const std::string& code, const std::string& message,
                        const std::string& field, unsigned version, bool keep_alive) {
  json err = {{"code", code}, {"message", message}, {"field", field.empty() ? json(nullptr) : json(field)}};
  Response res{static_cast<http::status>(status), version};
  res.set(http::field::server, "resnext-coordinator");
  res.set(http::field::content_type, "application/json");
  if (status == 401) res.set(http::field::www_authenticate, "Bearer");
  res.keep_alive(keep_alive);
  // Messages may quote the request target, which need not be UTF-8: replace rather than throw.
  res.body() = dump_json(json{{"error", err}});
  res.prepare_payload();
  return res;
}

bool ServiceState::admit(const boost::asio::ip::address& client) {
  std::lock_guard<std::mutex> lock(clients_mu_);
  if (connections.load() >= max_connections) return false;
  int& n = clients_[client];
  if (n >= max_connections_per_client) return false;
  ++n;
  connections.fetch_add(1);
  return true;
}

void ServiceState::release(const boost::asio::ip::address& client) {
  std::lock_guard<std::mutex> lock(clients_mu_);
  connections.fetch_sub(1);
  if (auto it = clients_.find(client); it != clients_.end() && --it->second <= 0) clients_.erase(it);
}

Response route(const Request& req, ServiceState& st) {
  const auto t0 = std::chrono::steady_clock::now();
  RouteId rid = RouteId::kNotFound;
  Response res;
  if (req.body().size() > kMaxBodyBytes) {
    rid = RouteId::kTooLarge;
    res = error_response(413, "too_large", "body exceeds " + std::to_string(kMaxBodyBytes) + " bytes", "",
                         req.version(), false);
  } else {
    try {
      res = dispatch(req, st, rid);
    } catch (const ApiError& e) {
      res = error_response(e.status(), e.code(), e.what(), e.field(), req.version(), req.keep_alive());
    } catch (const ConfigError& e) {
      res = error_response(400, "invalid_config", e.message(), e.field(), req.version(), req.keep_alive());
    } catch (const std::exception& e) {
      spdlog::error("{} {}: {}", std::string(req.method_string()), std::string(req.target()), e.what());
      res = error_response(500, "internal", e.what(), "", req.version(), req.keep_alive());
    } catch (...) {  // [No crash] whatever a handler throws is this request's 500, never the process's end
      spdlog::error("{} {}: non-standard exception", std::string(req.method_string()),
                    std::string(req.target()));
      res = error_response(500, "internal", "internal error", "", req.version(), req.keep_alive());
    }
  }
  if (req.method() == http::verb::head) res.body().clear();  // content-length stays that of GET
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  st.http.record(rid, res.result_int(), secs);
  return res;
}

}  // namespace rx::coord
