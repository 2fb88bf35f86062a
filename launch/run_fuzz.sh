#!/usr/bin/env bash
# The instrumented half of CI (launch/run_tests.sh runs it after the CPU suite), or by hand:
#   launch/run_fuzz.sh                  build build-fuzz, coordinator tests under ASan+UBSan, every fuzzer
#   launch/run_fuzz.sh --fuzz-only router idx   only the named fuzzers (no test run)
#   RX_FUZZ_SECONDS=600 launch/run_fuzz.sh --fuzz-only config   a longer local session
#   launch/run_fuzz.sh --build-only     only build build-fuzz (launch/run_tests.sh, [Overlapped builds])
# build-fuzz is one Clang build with RX_SANITIZE=address,undefined and RX_FUZZ=ON: the coordinator, its
# tests and the torch-free data/config tests are built with ASan+UBSan (and libFuzzer's coverage
# instrumentation, harmless outside a fuzzer) and run under CTest; then each fuzz_<name> runs for
# RX_FUZZ_SECONDS (default 30) from its checked-in seeds (fuzz/corpus/<name>, copied to a working
# corpus in build-fuzz/corpus so the seeds stay small). A crash leaves its input in
# build-fuzz/artifacts/<name>/; copy it to fuzz/regressions/<name>/ and fix the bug: the
# fuzz_replay_<name> tests of the normal suite replay that folder.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${RX_FUZZ_SECONDS:-30}
ALL=(router json_guard config idx cifar)
only=0
build_only=0
targets=("${ALL[@]}")
if [ "${1:-}" = --build-only ]; then
  build_only=1
  shift
elif [ "${1:-}" = --fuzz-only ]; then
  only=1
  shift
  [ $# -gt 0 ] && targets=("$@")
fi
for t in "${targets[@]}"; do
  [[ " ${ALL[*]} " == *" $t "* ]] || { echo "run_fuzz: unknown target '$t' (one of: ${ALL[*]})" >&2; exit 2; }
done
command -v clang++ >/dev/null || { echo "run_fuzz: clang++ not found (launch/setup.sh installs clang)" >&2; exit 1; }

t0=$(date +%s)
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
mkdir -p build-fuzz
# [Fuzz build level] -O0 with line tables only (readable sanitizer stacks). Every object carries ASan,
# UBSan and coverage, and at -O1 Clang spends most of its time optimising that instrumentation in
# Beast's templates: the HTTP client and session units took 48 and 50 s at -O1, 19 and 20 s at -O0
# (one CI-class core). CI builds this beside its CPU suite on 2 cores, so that is minutes of its
# length. The price is slower instrumented code: fewer fuzzer executions in CI's 30 s.
# RX_FUZZ_OPT=-O1 for a long local session (more executions per second; changing it rebuilds).
opt=${RX_FUZZ_OPT:--O0}
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=$opt -gline-tables-only -DNDEBUG" \
  "-DCMAKE_C_FLAGS_RELWITHDEBINFO=$opt -gline-tables-only -DNDEBUG" \
  -DRX_SANITIZE=address,undefined -DRX_FUZZ=ON "${launcher[@]}" \
  > build-fuzz/configure.log 2>&1 || { cat build-fuzz/configure.log; exit 1; }
TESTS=(coordinator_routes coordinator_report_client coordinator_hardening test_config test_shard_plan test_data_readers test_data_corruption)
build=(resnext_coordinator)
for t in "${ALL[@]}"; do build+=("fuzz_$t" "fuzz_${t}_replay"); done
cmake --build build-fuzz -j "$(nproc)" --target "${build[@]}" "${TESTS[@]}"
t1=$(date +%s)
echo "run_fuzz: build-fuzz built in $((t1 - t0)) s"
[ "$build_only" = 1 ] && exit 0

# halt_on_error + abort: a sanitizer report fails the test that caused it.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if [ "$only" = 0 ]; then
  # The coordinator's tests (unit, routes, real HTTP API with real mpirun) and the torch-free
  # config/data tests, once, under ASan+UBSan. coordinator_e2e needs the LibTorch worker: not here.
  regex="^($(IFS='|'; echo "${TESTS[*]}")|coordinator_api|fuzz_replay_.*)$"
  ctest --test-dir build-fuzz --output-on-failure -j 2 -R "$regex"
  t2=$(date +%s)
  echo "run_fuzz: sanitizer tests took $((t2 - t1)) s"
fi

# Two fuzzers at a time (CI has 2 cores); each writes its log to build-fuzz/fuzz-<name>.log.
run_one() {
  local t=$1 work=build-fuzz/corpus/$1 art=build-fuzz/artifacts/$1/
  mkdir -p "$work" "$art"
  local dict=()
  [ -f "fuzz/$t.dict" ] && dict=(-dict="fuzz/$t.dict")
  build-fuzz/fuzz/fuzz_"$t" "$work" fuzz/corpus/"$t" "${dict[@]}" -max_total_time="$SECONDS_EACH" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$art" \
    > "build-fuzz/fuzz-$t.log" 2>&1
}
fails=()
pids=()
names=()
for t in "${targets[@]}"; do
  run_one "$t" & pids+=($!); names+=("$t")
  if [ ${#pids[@]} -eq 2 ]; then
    for i in 0 1; do wait "${pids[$i]}" || fails+=("${names[$i]}"); done
    pids=(); names=()
  fi
done
for i in "${!pids[@]}"; do wait "${pids[$i]}" || fails+=("${names[$i]}"); done
for t in "${targets[@]}"; do
  echo "run_fuzz: fuzz_$t: $(grep -E '^(stat::number_of_executed_units|Done|#[0-9]+ +DONE)' "build-fuzz/fuzz-$t.log" | tr '\n' ' ')"
done
if [ ${#fails[@]} -gt 0 ]; then
  for t in "${fails[@]}"; do
    echo "run_fuzz: fuzz_$t FAILED; its log (tail) and the input it kept:" >&2
    tail -n 60 "build-fuzz/fuzz-$t.log" >&2
    ls -l "build-fuzz/artifacts/$t/" >&2
  done
  exit 1
fi
echo "run_fuzz: ${#targets[@]} fuzzers ran ${SECONDS_EACH} s each without a crash; total $(( $(date +%s) - t0 )) s"
