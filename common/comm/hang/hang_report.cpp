#include "common/comm/hang/hang_report.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>

#include "common/util/error.h"

namespace rx::comm::hang {

using json = nlohmann::json;

json to_json(const CollectiveInfo& c) {
  return {{"seq", c.seq},     {"kind", c.kind},     {"what", c.what},  {"step", c.step},
          {"phase", c.phase}, {"bucket", c.bucket}, {"age_s", c.age_s}};
}

json to_json(const RankState& s) {
  json j = {{"run_id", s.run_id},
            {"rank", s.rank},
            {"host", s.host},
            {"pid", s.pid},
            {"last_posted", s.last_posted},
            {"last_done", s.last_done},
            {"step", s.step},
            {"phase", s.phase},
            {"written_ms", s.written_ms},
            {"oldest_pending", nullptr},
            {"last", nullptr}};
  if (s.oldest_pending) j["oldest_pending"] = to_json(*s.oldest_pending);
  if (s.last) j["last"] = to_json(*s.last);
  return j;
}

namespace {
template <typename T>
T field(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key))
    throw DataError("rank state", std::string("missing field \"") + key + "\"");
  try {
    return j.at(key).get<T>();
  } catch (const json::exception&) {
    throw DataError("rank state", std::string("field \"") + key + "\" has the wrong type");
  }
}

std::optional<CollectiveInfo> info_from_json(const json& j, const char* key) {
  if (!j.contains(key) || j.at(key).is_null()) return std::nullopt;
  const json& c = j.at(key);
  return CollectiveInfo{field<int64_t>(c, "seq"),       field<std::string>(c, "kind"),
                        field<std::string>(c, "what"),  field<int64_t>(c, "step"),
                        field<std::string>(c, "phase"), field<int>(c, "bucket"),
                        field<double>(c, "age_s")};
}

std::string hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "";
  return buf;
}

std::string describe(const CollectiveInfo& c) {
  std::ostringstream os;
  os << "#" << c.seq << " (" << c.what;
  if (c.step >= 0) os << ", step " << c.step;
  if (c.bucket >= 0) os << ", bucket " << c.bucket;
  if (!c.phase.empty()) os << ", phase " << c.phase;
  os << ")";
  return os.str();
}

std::string fixed1(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", v);
  return buf;
}
}  // namespace

RankState rank_state_from_json(const json& j) {
  RankState s;
  s.run_id = field<std::string>(j, "run_id");
  s.rank = field<int>(j, "rank");
  s.host = field<std::string>(j, "host");
  s.pid = field<int64_t>(j, "pid");
  s.last_posted = field<int64_t>(j, "last_posted");
  s.last_done = field<int64_t>(j, "last_done");
  s.step = field<int64_t>(j, "step");
  s.phase = field<std::string>(j, "phase");
  s.written_ms = field<int64_t>(j, "written_ms");
  s.oldest_pending = info_from_json(j, "oldest_pending");
  s.last = info_from_json(j, "last");
  return s;
}

std::string probe_process(const RankState& s) {
  if (s.host != hostname()) return "unknown";
  std::ifstream in("/proc/" + std::to_string(s.pid) + "/stat");
  std::string stat;
  if (!in || !std::getline(in, stat)) return "dead";
  // The state letter follows the last ')' (the command name may itself contain parentheses).
  const auto close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return "unknown";
  switch (stat[close + 2]) {
    case 'T':
    case 't':
      return "stopped";
    case 'Z':
    case 'X':
      return "dead";
    default:
      return "running";
  }
}

// [Per-node view] The report's ranks grouped by host. A host is "silent" when none of its ranks has
// a fresh heartbeat: the signature of a lost node (power, network, a killed slurmd with its ranks),
// named once instead of leaving the reader to notice that every missing rank shares a host.
json group_by_host(const json& ranks) {
  json hosts = json::array();
  for (const auto& e : ranks) {
    if (!e.contains("host")) continue;  // never seen: no host known
    auto it = std::find_if(hosts.begin(), hosts.end(), [&](const json& h) { return h["host"] == e["host"]; });
    if (it == hosts.end()) {
      hosts.push_back({{"host", e["host"]}, {"ranks", json::array()}, {"silent", true}});
      it = std::prev(hosts.end());
    }
    (*it)["ranks"].push_back(e["rank"]);
    if (e.value("responding", false)) (*it)["silent"] = false;
  }
  return hosts;
}

json build_report(const ReportInput& in, const ProcessProbe& probe) {
  const CollectiveInfo& c = in.hung;
  json entered = json::array(), missing = json::array(), stalled = json::array(), ranks = json::array();
  std::ostringstream missing_text, stalled_text;
  for (size_t r = 0; r < in.states.size(); ++r) {
    const auto& st = in.states[r];
    json e = {{"rank", static_cast<int>(r)}};
    if (!st) {
      e["entered"] = false;
      e["last_seen"] = "never published a heartbeat for this run";
      missing.push_back(static_cast<int>(r));
      missing_text << (missing.size() > 1 ? "; " : "") << "rank " << r << " (never seen)";
      ranks.push_back(e);
      continue;
    }
    // [Entered] Collectives are numbered in call order on every rank, so a rank that posted N or
    // later has entered N (a broadcast root can even have left it).
    const bool in_it = st->last_posted >= c.seq;
    const double age = std::max<double>(0, static_cast<double>(in.now_ms - st->written_ms) / 1000.0);
    const bool responding = age <= in.stale_after_s;
    const std::string process = probe ? probe(*st) : "unknown";
    std::ostringstream seen;
    seen << "step " << st->step << ", phase " << (st->phase.empty() ? "-" : st->phase);
    if (st->oldest_pending)
      seen << ", waiting in collective " << describe(*st->oldest_pending);
    else if (st->last)
      seen << ", not in a collective; last one " << describe(*st->last) << " completed";
    else
      seen << ", no collective posted yet";
    e.update({{"host", st->host},
              {"pid", st->pid},
              {"entered", in_it},
              {"last_posted", st->last_posted},
              {"last_done", st->last_done},
              {"step", st->step},
              {"phase", st->phase},
              {"heartbeat_age_s", age},
              {"responding", responding},
              {"process", process},
              {"last_seen", seen.str()}});
    ranks.push_back(e);
    if (in_it) {
      entered.push_back(static_cast<int>(r));
      // [Stalled] A rank stopped right after posting its part of a non-blocking collective has
      // entered it, yet the collective cannot finish without it: named as stalled, not missing.
      if (!responding || process == "stopped" || process == "dead") {
        stalled.push_back(static_cast<int>(r));
        stalled_text << (stalled.size() > 1 ? "; " : "") << "rank " << r << " (" << st->host << " pid "
                     << st->pid << ", process " << process << ", "
                     << (responding ? "heartbeat alive" : "no heartbeat for " + fixed1(age) + " s")
                     << ", last seen at " << seen.str() << ")";
      }
      continue;
    }
    missing.push_back(static_cast<int>(r));
    missing_text << (missing.size() > 1 ? "; " : "") << "rank " << r << " (" << st->host << " pid " << st->pid
                 << ", process " << process << ", "
                 << (responding ? "heartbeat alive" : "no heartbeat for " + fixed1(age) + " s")
                 << ", last seen at " << seen.str() << ")";
  }
  const json hosts = group_by_host(ranks);
  std::ostringstream silent_text;
  for (const auto& h : hosts)
    if (h["silent"].get<bool>())
      silent_text << (silent_text.tellp() > 0 ? "; " : "") << h["host"].get<std::string>() << " (ranks "
                  << h["ranks"].dump() << ")";
  std::ostringstream msg;
  msg << "hang: collective " << describe(c) << " not complete after " << fixed1(c.age_s)
      << " s (hang_timeout_s " << in.hang_timeout_s << "); entered by rank(s) " << entered.dump() << "; ";
  if (missing.empty() && !stalled.empty())
    msg << "every rank entered it; not progressing: " << stalled_text.str();
  else if (missing.empty())
    msg << "every rank entered it (a stuck transport or a diverged collective, not a missing rank)";
  else
    msg << "missing: " << missing_text.str();
  if (silent_text.tellp() > 0) msg << "; every rank silent on node(s): " << silent_text.str();
  return {{"collective", to_json(c)}, {"detected_by", in.reporter},
          {"waited_s", c.age_s},      {"hang_timeout_s", in.hang_timeout_s},
          {"detected_ms", in.now_ms}, {"entered", entered},
          {"missing", missing},       {"stalled", stalled},
          {"ranks", ranks},           {"hosts", hosts},
          {"message", msg.str()}};
}

}  // namespace rx::comm::hang
