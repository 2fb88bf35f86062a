#pragma once
// [JobStore] SQLite (WAL, synchronous=FULL) under the state dir. Every state transition and every
// report is one transaction, committed before the HTTP response goes out, so a coordinator killed at
// any point restarts with exactly what it acknowledged. The store is write-mostly: reads happen once at
// startup (load_all) and for the metrics time series; GETs are served from JobService's cache.
// Not thread-safe on its own; JobService serialises access under its mutex.
#include <sqlite3.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/jobs/job.h"

namespace rx::coord {

class JobStore {
 public:
  explicit JobStore(const std::string& path);  // ":memory:" for tests
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  void insert(Job& job);  // assigns job.seq
  void update(const Job& job);
  // One transaction: the report row and the job's updated columns (last_progress/result).
  void append_report(const Job& job, int64_t received_ms, const std::string& body);
  std::vector<Job> load_all();  // ordered by seq
  std::vector<std::pair<int64_t, std::string>> reports(const std::string& job_id);
  std::map<std::string, int64_t> report_counts();  // job id -> reports stored

 private:
  void exec(const std::string& sql);
  void bind_job(sqlite3_stmt* st, const Job& job);
  sqlite3* db_ = nullptr;
  std::string path_;
};

}  // namespace rx::coord
