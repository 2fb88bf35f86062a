#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs the whole suite with CTest.
# Then the instrumented half (launch/run_fuzz.sh) and, where the CUDA toolkit is installed
# (/usr/local/cuda, as on this project's machines), the CUDA build (launch/build_cuda.sh: PyPI's CUDA
# LibTorch, cached in ~/.cache/resnext-cuda): that build's tests that need no GPU plus the gpu-labelled
# ones, which report themselves skipped, with the reason, where no GPU is visible. Both builds are made
# while the CPU suite runs ([Overlapped builds]). RX_SKIP_FUZZ=1 / RX_SKIP_CUDA=1 leave either out;
# arguments go to the CPU suite's ctest and leave both out.
set -euo pipefail
cd "$(dirname "$0")/.."
launch/setup.sh
# .clang-format is enforced: an unformatted C++ line fails the run before anything is built.
launch/check_format.sh
launch/build.sh

fuzz=0
cuda=0
if [ "${RX_SKIP_FUZZ:-0}" != 1 ] && [ $# -eq 0 ]; then fuzz=1; fi
if [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ] && [ "${RX_SKIP_CUDA:-0}" != 1 ] && [ $# -eq 0 ]; then cuda=1; fi
# Only what the CUDA checks below run (the whole CUDA build is 169 steps; these are what CI needs): the
# worker, the GPU tests, and the CPU-side tests whose code meets LibTorch's API (the communicators'
# factory, data parallelism, the fused optimizers against LibTorch 2's own). Config, shard plan, LR
# schedule and the thread communicator do not depend on LibTorch's version: the CPU build tests them.
CUDA_TARGETS="resnext_worker mpi_comm_test test_data_parallel test_fused_optimizer gpu_nccl_test \
  gpu_shared_ranks_test gpu_training_test"

# [Overlapped builds] The CPU suite leaves about a quarter of the two cores idle (measured: 28.5 of 46
# core-minutes busy; its fault, Slurm and multinode tests wait on heartbeats, deadlines and the
# scheduler). The instrumented build (build-fuzz) and the CUDA build are made meanwhile, and must take
# only that idle time. A per-task priority is not enough: with autogroup scheduling every session is a
# scheduling group with an equal share of the CPU whatever its tasks' priorities, and the tests' jobs
# run in sessions of their own (the coordinator, Slurm and mpirun start them with setsid). Under
# `chrt --idle` alone the builds still took half a core from such a job: a 1-rank worker's two
# OpenMP threads then wait on each other at every barrier, and coordinator_faults_matrix_fewer_ranks
# took 388 s instead of 25 (reproduced with two idle-class busy loops). So the builds go into a cpu
# cgroup with cpu.idle=1 (idle_cgroup below; the whole group is then scheduled only when nothing else
# wants a core: 25 s with the same busy loops), with chrt --idle and nice 19 as well, or alone where
# no cgroup can be made. The job gets its own process group (set -m), killed if this script exits
# early; its output goes to build-background.log, and the stages after the suite wait for it. That
# idle time is roughly 12 core-minutes in a 23-minute suite, so what the builds cost decides how long
# the run waits for them after the suite: with build-fuzz at -O0 ([Fuzz build level] in
# run_fuzz.sh) they were done 3.5 min after it, against 8 min at -O1.
# Prints a new cpu cgroup directory with cpu.idle=1 (cgroup v1's cpu hierarchy, or v2 where its cpu
# controller is on), or nothing. cpu.idle must exist before it is written: on a tmpfs that is not a
# cgroup file system, mkdir and the write would both succeed and mean nothing.
idle_cgroup() {
  local root dir
  for root in /sys/fs/cgroup/cpu /sys/fs/cgroup; do
    dir=$root/resnext-ci-$$
    mkdir "$dir" 2>/dev/null || continue
    if [ -e "$dir/cpu.idle" ] && echo 1 > "$dir/cpu.idle" 2>/dev/null; then
      echo "$dir"
      return 0
    fi
    rmdir "$dir" 2>/dev/null || true
  done
}
bg=""
cg=""
if [ $fuzz = 1 ] || [ $cuda = 1 ]; then
  idle=(nice -n 19)
  if command -v chrt >/dev/null && chrt --idle 0 true 2>/dev/null; then idle+=(chrt --idle 0); fi
  cg=$(idle_cgroup || true)
  echo "run_tests: background builds in ${cg:-no cgroup (no writable cpu cgroup with cpu.idle)}, ${idle[*]}"
  set -m
  "${idle[@]}" bash -c '
    set -euo pipefail
    if [ -n "$4" ] && ! echo $$ > "$4/cgroup.procs"; then echo "run_tests: could not join $4"; fi
    if [ "$1" = 1 ]; then launch/run_fuzz.sh --build-only; fi
    if [ "$2" = 1 ]; then launch/build_cuda.sh --targets "$3"; fi' _ "$fuzz" "$cuda" "$CUDA_TARGETS" "$cg" \
    > build-background.log 2>&1 &
  bg=$!
  set +m
  trap 'if [ -n "$bg" ]; then kill -- -"$bg" 2>/dev/null || true; fi; if [ -n "$cg" ]; then rmdir "$cg" 2>/dev/null || true; fi' EXIT
fi

# e2e tests reserve both cores (PROCESSORS 2), so -j2 only overlaps the light ones.
ctest --test-dir build --output-on-failure -j 2 "$@"

if [ -n "$bg" ]; then
  echo "run_tests: waiting for the background builds (build-background.log)"
  if ! wait "$bg"; then
    tail -n 80 build-background.log
    echo "run_tests: a background build failed (build-background.log)" >&2
    exit 1
  fi
  bg=""
  if [ -n "$cg" ]; then rmdir "$cg" 2>/dev/null || true; fi
  cg=""
  grep -E "^run_fuzz: build-fuzz built|^build_cuda: " build-background.log | sed 's/^/run_tests: background: /' || true
fi
# The instrumented half (build-fuzz, Clang): coordinator tests under ASan+UBSan, then every libFuzzer
# target for RX_FUZZ_SECONDS (30) from its seeds. RX_SKIP_FUZZ=1 leaves it out.
if [ $fuzz = 1 ]; then
  launch/run_fuzz.sh
fi
if [ $cuda = 1 ]; then
  echo "run_tests: CUDA toolkit found: testing the CUDA build (build-cuda)"
  launch/build_cuda.sh --targets "$CUDA_TARGETS"  # built in the background above: only checks it is current
  ldd build-cuda/worker/resnext_worker | grep -E 'libtorch_cuda|libcudnn|libnccl' | sed 's/^/run_tests: links /'
  # The CUDA worker on this GPU-less machine: describe, devices, and a one-rank CPU training run.
  build-cuda/worker/resnext_worker describe --model resnext29_8x64d | tail -n 1
  build-cuda/worker/resnext_worker devices
  rm -rf build-cuda/cpu-run
  build-cuda/worker/resnext_worker train --config configs/fashion_mnist_small.json --out build-cuda/cpu-run \
    --set data.max_train_samples=256 --set data.max_test_samples=128 --set training.epochs=1 | tail -n 2
  grep -q '"type": "cpu"' build-cuda/cpu-run/result.json
  # The CPU-side tests of the CUDA build (communicators, data parallelism, the worker's CLI, the fused
  # optimizers against LibTorch 2's own) and the GPU tests, which skip here with their reason.
  ctest --test-dir build-cuda --output-on-failure -j 2 \
    -R '^(worker_describe|test_mpi_comm_np[1-4]|test_data_parallel|test_fused_optimizer|gpu_.*)$'
fi
