// [CLI client] The same binary talks to a running coordinator: tables for people, --json for scripts
// (the server's JSON verbatim). HTTP errors print the server's {"error":{...}} and exit 1; misuse
// exits 2 (UsageError, caught in main).
#include "coordinator/client/cli.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "common/config/job_config.h"
#include "common/report/http_client.h"
#include "common/util/args.h"
#include "common/util/error.h"
#include "coordinator/client/progress.h"

namespace rx::coord {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct Conn {
  std::string url;
  std::string token;
  std::chrono::milliseconds timeout{10000};
};

// Returns the parsed body for 2xx; prints the error and returns nullopt otherwise.
std::optional<rx::report::HttpResponse> call(const Conn& c, const std::string& method,
                                             const std::string& target, const std::string& body = "",
                                             std::vector<std::pair<std::string, std::string>> headers = {}) {
  if (!c.token.empty()) headers.emplace_back("Authorization", "Bearer " + c.token);
  auto res = rx::report::http_request(c.url, method, target, body, headers, c.timeout);
  if (res.status >= 200 && res.status < 300) return res;
  json err = json::parse(res.body, nullptr, false);
  if (err.is_object() && err.contains("error") && err["error"].is_object()) {
    const json& e = err["error"];
    std::cerr << "error: HTTP " << res.status << " " << e.value("code", "") << ": " << e.value("message", "");
    if (e.contains("field") && e["field"].is_string())
      std::cerr << " (field " << e["field"].get<std::string>() << ")";
    std::cerr << "\n";
  } else {
    std::cerr << "error: HTTP " << res.status << ": " << res.body.substr(0, 500) << "\n";
  }
  return std::nullopt;
}

std::string str(const json& j) {
  if (j.is_null()) return "-";
  if (j.is_string()) return j.get<std::string>();
  if (j.is_number_float()) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4g", j.get<double>());
    return buf;
  }
  return j.dump();
}

std::string pad(std::string s, size_t w) {
  if (s.size() > w) s = s.substr(0, w - 1) + "~";
  return s + std::string(w - s.size() + 1, ' ');
}

void print_table(const json& jobs) {
  std::cout << pad("ID", 14) << pad("NAME", 22) << pad("STATE", 10) << pad("RANKS", 5) << pad("EPOCH", 8)
            << pad("ACC", 7) << pad("OWNER", 10) << "CREATED\n";
  for (const auto& j : jobs) {
    const json& p = j["progress"];
    std::string epoch = p["epoch"].is_null() ? "-" : str(p["epoch"]) + "/" + str(p["epochs"]);
    std::cout << pad(str(j["id"]), 14) << pad(str(j["name"]), 22) << pad(str(j["state"]), 10)
              << pad(str(j["world_size"]), 5) << pad(epoch, 8) << pad(str(j["test_accuracy"]), 7)
              << pad(str(j["owner"]), 10) << str(j["created_at"]) << "\n";
  }
}

void print_job(const json& j) {
  const json& p = j["progress"];
  std::cout << "id:            " << str(j["id"]) << "\n"
            << "name:          " << str(j["name"]) << "\n"
            << "state:         " << str(j["state"]) << "\n"
            << "owner:         " << str(j["owner"]) << "\n"
            << "world_size:    " << str(j["world_size"]) << "\n"
            << "created_at:    " << str(j["created_at"]) << "\n"
            << "started_at:    " << str(j["started_at"]) << "\n"
            << "finished_at:   " << str(j["finished_at"]) << "\n"
            << "progress:      epoch " << str(p["epoch"]) << "/" << str(p["epochs"]) << ", step "
            << str(p["step"]) << "/" << str(p["steps_per_epoch"]) << "\n"
            << "loss:          " << str(j["loss"]) << "\n"
            << "test_accuracy: " << str(j["test_accuracy"]) << "\n"
            << "exit_code:     " << str(j["exit_code"]) << "\n";
  if (!j["error"].is_null()) std::cout << "error:         " << str(j["error"]) << "\n";
  if (j.contains("hang") && j["hang"].is_object() && j["hang"].contains("message"))
    std::cout << "hang:          " << str(j["hang"]["message"]) << "\n";
  if (j.contains("attempts") && j["attempts"].size() > 1)
    for (const auto& at : j["attempts"])
      std::cout << "  attempt " << str(at["attempt"]) << ": " << str(at["started_at"]) << " .. "
                << str(at["ended_at"]) << ", resumed from " << str(at["resumed_from"])
                << ", ended: " << str(at["cause"]) << "\n";
  for (const auto& r : j["ranks"])
    std::cout << "  rank " << str(r["rank"]) << ": " << str(r["images_per_sec"]) << " img/s, peak "
              << str(r["peak_memory_bytes"]) << " bytes"
              << (r.contains("host") && r["host"].is_string() ? ", on " + str(r["host"]) : std::string())
              << "\n";
  if (j.contains("nodes") && j["nodes"].size() > 1)  // [Per-node view] only worth lines with several nodes
    for (const auto& n : j["nodes"])
      std::cout << "  node " << str(n["host"]) << ": ranks " << n["ranks"].dump() << ", "
                << str(n["images_per_sec"]) << " img/s, peak " << str(n["peak_memory_bytes"]) << " bytes\n";
}

bool terminal(const std::string& s) { return s == "succeeded" || s == "failed" || s == "cancelled"; }

}  // namespace

int client_main(const std::string& command, const std::vector<std::string>& argv) {
  Args a(argv,
         {"url", "token", "ranks", "set", "name", "tail", "state", "limit", "offset", "interval-ms",
          "idempotency-key", "timeout-ms", "max-restarts", "min-ranks"},
         {"json", "watch"});
  Conn c;
  c.url = a.get_or("url", "http://127.0.0.1:8080");
  const char* env_token = std::getenv("RX_TOKEN");
  c.token = a.get_or("token", env_token ? env_token : "");
  c.timeout = std::chrono::milliseconds(a.get_int("timeout-ms", 10000, 1, 3600000));
  const bool as_json = a.has("json");
  const auto& pos = a.positionals();
  auto need_id = [&]() -> std::string {
    if (pos.size() != 1) throw UsageError(command + ": expected exactly one job ID");
    return pos[0];
  };

  if (command == "submit") {
    if (pos.size() != 1) throw UsageError("submit: expected one config file or preset name");
    if (!a.get("ranks")) throw UsageError("submit: --ranks N is required");
    json body = {{"ranks", a.get_int("ranks", 1, 1, 1 << 20)}};
    const std::string& cfg = pos[0];
    if (fs::exists(cfg) || cfg.find('/') != std::string::npos ||
        (cfg.size() > 5 && cfg.substr(cfg.size() - 5) == ".json")) {
      std::ifstream in(cfg);
      if (!in) throw UsageError("submit: cannot read config file '" + cfg + "'");
      std::stringstream ss;
      ss << in.rdbuf();
      json j = json::parse(ss.str(), nullptr, false);
      if (j.is_discarded() || !j.is_object()) throw UsageError("submit: '" + cfg + "' is not a JSON object");
      body["config"] = j;
      if (!a.get("name")) body["name"] = fs::path(cfg).stem().string();
    } else {
      body["config"] = cfg;
    }
    json overrides = json::object();
    for (const auto& kv : a.all("set")) {
      if (kv.find('=') == std::string::npos) throw UsageError("--set expects key=value, got '" + kv + "'");
      auto o = config::parse_override(kv);
      overrides[o.key] = o.value;
    }
    if (!overrides.empty()) body["overrides"] = overrides;
    if (auto n = a.get("name")) body["name"] = *n;
    if (a.get("max-restarts")) body["max_restarts"] = a.get_int("max-restarts", 0, 0, 100);
    // The server checks min_ranks <= ranks (400 naming the field); the client only bounds the number.
    if (a.get("min-ranks")) body["min_ranks"] = a.get_int("min-ranks", 1, 1, 1 << 20);
    std::vector<std::pair<std::string, std::string>> headers;
    if (auto k = a.get("idempotency-key")) headers.emplace_back("Idempotency-Key", *k);
    auto res = call(c, "POST", "/v1/jobs", body.dump(), headers);
    if (!res) return 1;
    json j = json::parse(res->body);
    if (as_json)
      std::cout << j.dump(2) << "\n";
    else
      std::cout << "submitted " << str(j["id"]) << " (" << str(j["state"]) << ", " << str(j["world_size"])
                << " ranks)\n";
    return 0;
  }
  if (command == "list") {
    std::string target = "/v1/jobs?limit=" + std::to_string(a.get_int("limit", 50, 1, 1000)) +
                         "&offset=" + std::to_string(a.get_int("offset", 0, 0, 1 << 30));
    if (auto s = a.get("state")) target += "&state=" + *s;
    auto res = call(c, "GET", target);
    if (!res) return 1;
    json j = json::parse(res->body);
    if (as_json)
      std::cout << j.dump(2) << "\n";
    else
      print_table(j["jobs"]);
    return 0;
  }
  if (command == "status" && a.has("watch") && !as_json) {
    WatchOptions w;
    w.interval_ms = a.get_int("interval-ms", 2000, 50, 3600000);
    w.tty = isatty(STDOUT_FILENO) == 1;
    winsize ws{};
    if (w.tty && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) w.columns = ws.ws_col;
    std::vector<std::string> ids = pos;
    if (ids.empty()) {  // every queued or running job
      for (const char* s : {"running", "restarting", "launching", "queued"}) {
        auto res = call(c, "GET", std::string("/v1/jobs?limit=1000&state=") + s);
        if (!res) return 1;
        const json page = json::parse(res->body);
        for (const auto& j : page["jobs"]) ids.push_back(j["id"].get<std::string>());
      }
      if (ids.empty()) {
        std::cout << "no queued or running jobs\n";
        return 0;
      }
    }
    return watch_jobs(
        ids,
        [&](const std::string& id) -> std::optional<json> {
          auto res = call(c, "GET", "/v1/jobs/" + id);
          if (!res) return std::nullopt;
          return json::parse(res->body);
        },
        w, std::cout);
  }
  if (command == "status") {
    const std::string id = need_id();
    const int interval = a.get_int("interval-ms", 2000, 50, 3600000);
    std::string last;
    for (;;) {
      auto res = call(c, "GET", "/v1/jobs/" + id);
      if (!res) return 1;
      json j = json::parse(res->body);
      if (res->body != last) {
        if (as_json)
          std::cout << j.dump(a.has("watch") ? -1 : 2) << std::endl;
        else {
          if (!last.empty()) std::cout << "--\n";
          print_job(j);
          std::cout.flush();
        }
        last = res->body;
      }
      if (!a.has("watch") || terminal(j.value("state", ""))) return 0;
      std::this_thread::sleep_for(std::chrono::milliseconds(interval));  // a UI refresh, not synchronisation
    }
  }
  if (command == "logs") {
    const std::string id = need_id();
    auto res =
        call(c, "GET", "/v1/jobs/" + id + "/logs?tail=" + std::to_string(a.get_int("tail", 100, 1, 100000)));
    if (!res) return 1;
    std::cout << res->body;
    return 0;
  }
  if (command == "cancel") {
    const std::string id = need_id();
    auto res = call(c, "POST", "/v1/jobs/" + id + "/cancel", "{}");
    if (!res) return 1;
    json j = json::parse(res->body);
    if (as_json)
      std::cout << j.dump(2) << "\n";
    else
      std::cout << "cancel requested for " << id << " (state " << str(j["state"]) << ")\n";
    return 0;
  }
  throw UsageError("unknown command '" + command + "'");
}

}  // namespace rx::coord
