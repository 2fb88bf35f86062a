// Unit tests of the Slurm launcher's pure parts: quoting, template rendering, state parsing and mapping,
// handles from job records.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <string>

#include "common/util/error.h"
#include "coordinator/launch/slurm_launcher.h"

using namespace rx::coord;

namespace {

// Runs `sh -c 'printf %s <quoted>'` and returns what the shell made of it.
std::string through_shell(const std::string& value) {
  const std::string cmd = "sh -c 'printf %s \"$0\"' " + shell_quote(value);
  std::unique_ptr<FILE, int (*)(FILE*)> p(popen(cmd.c_str(), "r"), pclose);
  std::string out;
  char buf[256];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p.get())) > 0) out.append(buf, n);
  return out;
}

}  // namespace

TEST(SlurmLauncher, ShellQuoteKeepsEverythingLiteral) {
  for (std::string v :
       {"plain", "it's", "$(touch /tmp/rx_pwned)", "a b\tc", "`id`", "''", "x\"y\\z", "$HOME;ls"})
    EXPECT_EQ(through_shell(v), v);
}

TEST(SlurmLauncher, RenderInsertsSettingsAndDropsLayout) {
  const std::string tmpl =
      "#!/bin/bash\n#SBATCH --nodes=1\n#SBATCH --ntasks-per-node=2\n#SBATCH --requeue\n"
      "# @rx-settings@ here\nbody\n";
  const std::string s = render_sbatch(tmpl, {{"RX_JOB_ID", "j1"}, {"RX_RUN_DIR", "/a b/'c'"}});
  EXPECT_EQ(s,
            "#!/bin/bash\n#SBATCH --requeue\n# @rx-settings@ here\n"
            "RX_JOB_ID='j1'\nRX_RUN_DIR='/a b/'\\''c'\\'''\nbody\n");
  EXPECT_THROW(render_sbatch("#!/bin/bash\necho\n", {}), rx::IoError);
}

TEST(SlurmLauncher, ParsesScontrolLine) {
  auto i = parse_scontrol_job(
      "JobId=7 JobName=rx-j1 UserId=root(0) JobState=PENDING Reason=(ReqNodeNotAvail, UnavailableNodes:vm) "
      "Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 ExitCode=0:0 RunTime=00:00:00");
  EXPECT_TRUE(i.known);
  EXPECT_EQ(i.state, "PENDING");
  EXPECT_EQ(i.reason, "(ReqNodeNotAvail, UnavailableNodes:vm)");
  ASSERT_TRUE(i.exit_code);
  EXPECT_EQ(*i.exit_code, 0);
  auto f =
      parse_scontrol_job("JobId=8 JobState=FAILED Reason=NonZeroExitCode Dependency=(null) ExitCode=2:0");
  EXPECT_EQ(f.state, "FAILED");
  ASSERT_TRUE(f.exit_code);
  EXPECT_EQ(*f.exit_code, 2);
  EXPECT_FALSE(parse_scontrol_job("slurm_load_jobs error: Invalid job id specified").known);
  auto a = parse_sacct_line("CANCELLED by 0|0:15");
  EXPECT_TRUE(a.known);
  EXPECT_EQ(a.state, "CANCELLED");
  EXPECT_EQ(a.exit_signal, 15);
}

TEST(SlurmLauncher, MapsStates) {
  auto info = [](const char* st, int rc = 0, int sig = 0) {
    SlurmJobInfo i;
    i.known = true;
    i.state = st;
    i.exit_code = rc;
    i.exit_signal = sig;
    return i;
  };
  for (auto st : {"PENDING", "REQUEUED", "PREEMPTED"}) {
    auto m = map_slurm_state(info(st));
    EXPECT_TRUE(m.live && m.queued && !m.exit) << st;
  }
  for (auto st : {"RUNNING", "COMPLETING"}) {
    auto m = map_slurm_state(info(st));
    EXPECT_TRUE(m.live && !m.queued && !m.exit) << st;
  }
  auto ok = map_slurm_state(info("COMPLETED"));
  ASSERT_TRUE(ok.exit && ok.exit->exit_code);
  EXPECT_EQ(*ok.exit->exit_code, 0);
  EXPECT_EQ(ok.exit->outcome, ExitOutcome::kSucceeded);
  auto c = map_slurm_state(info("CANCELLED", 0, 15));
  EXPECT_TRUE(c.exit && c.exit->outcome == ExitOutcome::kCancelled);
  for (auto st : {"FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}) {
    auto m =
        map_slurm_state(info(st, std::string(st) == "FAILED" ? 3 : 0, std::string(st) == "TIMEOUT" ? 15 : 0));
    ASSERT_TRUE(m.exit) << st;
    EXPECT_EQ(m.exit->outcome, ExitOutcome::kFailed) << st;
    // never a 0 exit code for a failure: the service would call that a success
    EXPECT_TRUE(!m.exit->exit_code || *m.exit->exit_code != 0) << st;
    EXPECT_NE(m.exit->reason.find(st), std::string::npos) << m.exit->reason;
  }
  auto failed = map_slurm_state(info("FAILED", 3));
  ASSERT_TRUE(failed.exit && failed.exit->exit_code);
  EXPECT_EQ(*failed.exit->exit_code, 3);
  SlurmJobInfo gone;
  auto g = map_slurm_state(gone);
  EXPECT_TRUE(!g.live && g.exit && !g.exit->exit_code);
  EXPECT_EQ(g.exit->outcome, ExitOutcome::kUnknown);
}

// [Launch handle] A job record's pid column is a Slurm job id under this launcher (never a process),
// and sbatch/scancel are slow commands the service keeps off its I/O threads.
TEST(SlurmLauncher, RecordsBecomeBatchJobHandles) {
  const SlurmLauncher s(SlurmOptions{});
  const LaunchHandle h = s.from_record(4242, 0);
  ASSERT_NE(h.batch(), nullptr);
  EXPECT_EQ(h.batch()->id, 4242);
  EXPECT_EQ(h.local(), nullptr);
  EXPECT_EQ(h.record_id(), 4242);
  EXPECT_EQ(h.start_time(), 0u);
  const LaunchHandle none = s.from_record(0, 0);  // a queued job: nothing submitted yet
  EXPECT_EQ(none.batch(), nullptr);
  EXPECT_EQ(none.record_id(), 0);
  EXPECT_TRUE(s.slow_commands());
}
