#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs the whole suite with CTest.
# Where the CUDA toolkit is installed (/usr/local/cuda, as on this project's machines), it then builds
# the CUDA build (launch/build_cuda.sh: PyPI's CUDA LibTorch, cached in ~/.cache/resnext-cuda) and
# runs that build's tests that need no GPU plus the gpu-labelled ones, which report themselves
# skipped, with the reason, where no GPU is visible. RX_SKIP_CUDA=1 leaves the CUDA build out.
set -euo pipefail
cd "$(dirname "$0")/.."
launch/setup.sh
# .clang-format is enforced: an unformatted C++ line fails the run before anything is built.
launch/check_format.sh
launch/build.sh
# e2e tests reserve both cores (PROCESSORS 2), so -j2 only overlaps the light ones.
ctest --test-dir build --output-on-failure -j 2 "$@"
# The instrumented half (build-fuzz, Clang): coordinator tests under ASan+UBSan, then every libFuzzer
# target for RX_FUZZ_SECONDS (30) from its seeds. RX_SKIP_FUZZ=1 leaves it out.
if [ "${RX_SKIP_FUZZ:-0}" != 1 ] && [ $# -eq 0 ]; then
  launch/run_fuzz.sh
fi
if [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ] && [ "${RX_SKIP_CUDA:-0}" != 1 ] && [ $# -eq 0 ]; then
  echo "run_tests: CUDA toolkit found: building and testing the CUDA build (build-cuda)"
  # Only what the checks below run (the whole CUDA build is 169 steps; these are what CI needs).
  launch/build_cuda.sh --targets "resnext_worker mpi_comm_test test_thread_comm test_data_parallel test_config \
    test_shard_plan test_lr_schedule test_fused_optimizer gpu_nccl_test gpu_shared_ranks_test gpu_training_test"
  ldd build-cuda/worker/resnext_worker | grep -E 'libtorch_cuda|libcudnn|libnccl' | sed 's/^/run_tests: links /'
  # The CUDA worker on this GPU-less machine: describe, devices, and a one-rank CPU training run.
  build-cuda/worker/resnext_worker describe --model resnext29_8x64d | tail -n 1
  build-cuda/worker/resnext_worker devices
  rm -rf build-cuda/cpu-run
  build-cuda/worker/resnext_worker train --config configs/fashion_mnist_small.json --out build-cuda/cpu-run \
    --set data.max_train_samples=256 --set data.max_test_samples=128 --set training.epochs=1 | tail -n 2
  grep -q '"type": "cpu"' build-cuda/cpu-run/result.json
  # The CPU-side tests of the CUDA build (communicators, data parallelism, config, the worker's CLI,
  # the fused optimizers against LibTorch 2's own) and the GPU tests, which skip here with their reason.
  ctest --test-dir build-cuda --output-on-failure -j 2 \
    -R '^(worker_describe|test_mpi_comm_np[1-4]|test_thread_comm|test_data_parallel|test_config|test_shard_plan|test_lr_schedule|test_fused_optimizer|gpu_.*)$'
fi
