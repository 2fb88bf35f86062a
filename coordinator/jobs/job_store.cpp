#include "coordinator/jobs/job_store.h"

#include <map>
#include <memory>

#include "common/util/error.h"
#include "coordinator/util/util.h"

namespace rx::coord {
namespace {

struct StmtDeleter {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using Stmt = std::unique_ptr<sqlite3_stmt, StmtDeleter>;

const char* kColumns =
    "id, name, owner, state, world_size, config, idem_key, created_ms, started_ms, finished_ms, pid, pgid, "
    "exit_code, error, secret_hash, cancel_requested, cancel_ms, last_progress, result, request_hash, "
    "proc_start, hang, max_restarts, attempts, restart_due_ms, min_ranks";

std::string col_text(sqlite3_stmt* st, int i) {
  auto* p = sqlite3_column_text(st, i);
  return p ? std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(sqlite3_column_bytes(st, i)))
           : std::string();
}

nlohmann::json parse_or_null(const std::string& s) {
  if (s.empty()) return nullptr;
  return nlohmann::json::parse(s, nullptr, false);
}

}  // namespace

JobStore::JobStore(const std::string& path) : path_(path) {
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw IoError(path, "cannot open job store: " + msg);
  }
  sqlite3_busy_timeout(db_, 5000);
  exec("PRAGMA journal_mode=WAL");
  exec("PRAGMA synchronous=FULL");
  exec(
      "CREATE TABLE IF NOT EXISTS jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, name "
      "TEXT, "
      "owner TEXT, state TEXT, world_size INTEGER, config TEXT, idem_key TEXT, created_ms INTEGER, "
      "started_ms "
      "INTEGER, finished_ms INTEGER, pid INTEGER, pgid INTEGER, exit_code INTEGER, error TEXT, secret_hash "
      "TEXT, "
      "cancel_requested INTEGER, cancel_ms INTEGER, last_progress TEXT, result TEXT)");
  exec(
      "CREATE TABLE IF NOT EXISTS reports (n INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, "
      "received_ms INTEGER, body TEXT)");
  exec("CREATE INDEX IF NOT EXISTS reports_by_job ON reports(job_id, n)");
  // Columns added after the first release: a state dir from before gains them (empty/0).
  for (const char* col : {"request_hash TEXT", "proc_start INTEGER", "hang TEXT", "max_restarts INTEGER",
                          "attempts TEXT", "restart_due_ms INTEGER", "min_ranks INTEGER"}) {
    const std::string name = std::string(col).substr(0, std::string(col).find(' '));
    sqlite3_stmt* raw = nullptr;
    const std::string probe = "SELECT " + name + " FROM jobs LIMIT 0";
    if (sqlite3_prepare_v2(db_, probe.c_str(), -1, &raw, nullptr) == SQLITE_OK) {
      sqlite3_finalize(raw);
      continue;
    }
    sqlite3_finalize(raw);
    exec(std::string("ALTER TABLE jobs ADD COLUMN ") + col);
  }
}

std::map<std::string, int64_t> JobStore::report_counts() {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db_, "SELECT job_id, COUNT(*) FROM reports GROUP BY job_id", -1, &raw, nullptr) !=
      SQLITE_OK)
    throw IoError(path_, std::string("sqlite prepare: ") + sqlite3_errmsg(db_));
  Stmt st(raw);
  std::map<std::string, int64_t> out;
  while (sqlite3_step(raw) == SQLITE_ROW) out[col_text(raw, 0)] = sqlite3_column_int64(raw, 1);
  return out;
}

JobStore::~JobStore() { sqlite3_close(db_); }

void JobStore::exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    throw IoError(path_, "sqlite: " + msg + " in: " + sql.substr(0, 60));
  }
}

void JobStore::bind_job(sqlite3_stmt* st, const Job& j) {
  auto text = [&](int i, const std::string& s) { sqlite3_bind_text(st, i, s.c_str(), -1, SQLITE_TRANSIENT); };
  text(1, j.id);
  text(2, j.name);
  text(3, j.owner);
  text(4, to_string(j.state));
  sqlite3_bind_int(st, 5, j.world_size);
  text(6, dump_json(j.config));
  text(7, j.idempotency_key);
  sqlite3_bind_int64(st, 8, j.created_ms);
  sqlite3_bind_int64(st, 9, j.started_ms);
  sqlite3_bind_int64(st, 10, j.finished_ms);
  sqlite3_bind_int64(st, 11, j.pid);
  sqlite3_bind_int64(st, 12, j.pgid);
  if (j.exit_code)
    sqlite3_bind_int(st, 13, *j.exit_code);
  else
    sqlite3_bind_null(st, 13);
  text(14, j.error);
  text(15, j.secret_hash);
  sqlite3_bind_int(st, 16, j.cancel_requested ? 1 : 0);
  sqlite3_bind_int64(st, 17, j.cancel_ms);
  text(18, j.last_progress.is_null() ? std::string() : dump_json(j.last_progress));
  text(19, j.result.is_null() ? std::string() : dump_json(j.result));
  text(20, j.request_hash);
  sqlite3_bind_int64(st, 21, static_cast<int64_t>(j.proc_start));
  text(22, j.hang.is_null() ? std::string() : dump_json(j.hang));
  sqlite3_bind_int(st, 23, j.max_restarts);
  text(24, dump_json(j.attempts));  // [Foreign text]
  sqlite3_bind_int64(st, 25, j.restart_due_ms);
  sqlite3_bind_int(st, 26, j.min_ranks);
}

void JobStore::insert(Job& job) {
  std::string sql = std::string("INSERT INTO jobs (") + kColumns +
                    ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &raw, nullptr) != SQLITE_OK)
    throw IoError(path_, std::string("sqlite prepare: ") + sqlite3_errmsg(db_));
  Stmt st(raw);
  bind_job(raw, job);
  if (sqlite3_step(raw) != SQLITE_DONE)
    throw IoError(path_, std::string("sqlite insert: ") + sqlite3_errmsg(db_));
  job.seq = sqlite3_last_insert_rowid(db_);
}

void JobStore::update(const Job& job) {
  const char* sql =
      "UPDATE jobs SET id=?1, name=?2, owner=?3, state=?4, world_size=?5, config=?6, idem_key=?7, "
      "created_ms=?8, "
      "started_ms=?9, finished_ms=?10, pid=?11, pgid=?12, exit_code=?13, error=?14, secret_hash=?15, "
      "cancel_requested=?16, cancel_ms=?17, last_progress=?18, result=?19, request_hash=?20, "
      "proc_start=?21, hang=?22, max_restarts=?23, attempts=?24, restart_due_ms=?25, min_ranks=?26 WHERE "
      "id=?1";
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db_, sql, -1, &raw, nullptr) != SQLITE_OK)
    throw IoError(path_, std::string("sqlite prepare: ") + sqlite3_errmsg(db_));
  Stmt st(raw);
  bind_job(raw, job);
  if (sqlite3_step(raw) != SQLITE_DONE)
    throw IoError(path_, std::string("sqlite update: ") + sqlite3_errmsg(db_));
}

void JobStore::append_report(const Job& job, int64_t received_ms, const std::string& body) {
  exec("BEGIN IMMEDIATE");
  try {
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v2(db_, "INSERT INTO reports (job_id, received_ms, body) VALUES (?,?,?)", -1, &raw,
                           nullptr) != SQLITE_OK)
      throw IoError(path_, std::string("sqlite prepare: ") + sqlite3_errmsg(db_));
    Stmt st(raw);
    sqlite3_bind_text(raw, 1, job.id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(raw, 2, received_ms);
    sqlite3_bind_text(raw, 3, body.c_str(), static_cast<int>(body.size()), SQLITE_TRANSIENT);
    if (sqlite3_step(raw) != SQLITE_DONE)
      throw IoError(path_, std::string("sqlite insert report: ") + sqlite3_errmsg(db_));
    update(job);
    exec("COMMIT");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

std::vector<Job> JobStore::load_all() {
  std::string sql = std::string("SELECT seq, ") + kColumns + " FROM jobs ORDER BY seq";
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &raw, nullptr) != SQLITE_OK)
    throw IoError(path_, std::string("sqlite prepare: ") + sqlite3_errmsg(db_));
  Stmt st(raw);
  std::vector<Job> out;
  while (sqlite3_step(raw) == SQLITE_ROW) {
    Job j;
    j.seq = sqlite3_column_int64(raw, 0);
    j.id = col_text(raw, 1);
    j.name = col_text(raw, 2);
    j.owner = col_text(raw, 3);
    j.state = parse_job_state(col_text(raw, 4)).value_or(JobState::kFailed);
    j.world_size = sqlite3_column_int(raw, 5);
    j.config = parse_or_null(col_text(raw, 6));
    j.idempotency_key = col_text(raw, 7);
    j.created_ms = sqlite3_column_int64(raw, 8);
    j.started_ms = sqlite3_column_int64(raw, 9);
    j.finished_ms = sqlite3_column_int64(raw, 10);
    j.pid = sqlite3_column_int64(raw, 11);
    j.pgid = sqlite3_column_int64(raw, 12);
    if (sqlite3_column_type(raw, 13) != SQLITE_NULL) j.exit_code = sqlite3_column_int(raw, 13);
    j.error = col_text(raw, 14);
    j.secret_hash = col_text(raw, 15);
    j.cancel_requested = sqlite3_column_int(raw, 16) != 0;
    j.cancel_ms = sqlite3_column_int64(raw, 17);
    j.last_progress = parse_or_null(col_text(raw, 18));
    j.result = parse_or_null(col_text(raw, 19));
    j.request_hash = col_text(raw, 20);
    j.proc_start = static_cast<uint64_t>(sqlite3_column_int64(raw, 21));
    j.hang = parse_or_null(col_text(raw, 22));
    j.max_restarts = sqlite3_column_int(raw, 23);
    j.attempts = parse_or_null(col_text(raw, 24));
    if (!j.attempts.is_array()) j.attempts = nlohmann::json::array();
    j.restart_due_ms = sqlite3_column_int64(raw, 25);
    j.min_ranks = sqlite3_column_int(raw, 26);  // NULL (a row from before the column) reads as 0
    out.push_back(std::move(j));
  }
  return out;
}

std::vector<std::pair<int64_t, std::string>> JobStore::reports(const std::string& job_id) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db_, "SELECT received_ms, body FROM reports WHERE job_id=? ORDER BY n", -1, &raw,
                         nullptr) != SQLITE_OK)
    throw IoError(path_, std::string("sqlite prepare: ") + sqlite3_errmsg(db_));
  Stmt st(raw);
  sqlite3_bind_text(raw, 1, job_id.c_str(), -1, SQLITE_TRANSIENT);
  std::vector<std::pair<int64_t, std::string>> out;
  while (sqlite3_step(raw) == SQLITE_ROW) out.emplace_back(sqlite3_column_int64(raw, 0), col_text(raw, 1));
  return out;
}

}  // namespace rx::coord
