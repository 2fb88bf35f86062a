#!/usr/bin/env bash
# Builds the CUDA/NCCL path (RX_WITH_CUDA) into ./build-cuda against PyPI's CUDA LibTorch.
#
#   launch/build_cuda.sh [--targets "t1 t2"] [extra cmake args]
#
# [Pinned LibTorch] torch==2.11.0 from PyPI: its Linux x86-64 wheel is built for CUDA 13.0 with cuDNN
# 9.19 and NCCL 2.28.9, the versions under /usr/local/cuda on this machine kind, and 2.11.0 is the
# PyTorch of the GPU machines this project is checked on (launch/gpu_check.sh), so binaries built here
# run there against that machine's own copy of the same LibTorch. The wheel is installed with
# --no-deps into a cache folder outside the source tree (RX_CUDA_CACHE, default
# ~/.cache/resnext-cuda); CUDA's own libraries come from the toolkit, except three that the toolkit
# lacks and libtorch_cuda.so needs at link time: nvidia-cufile, nvidia-cusparselt-cu13 and
# nvidia-nvshmem-cu13 (the versions torch 2.11.0 pins). They sit beside torch/, where
# libtorch_cuda's RUNPATH looks. A second run reuses the cache and the build folder.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0
WHEELS=("torch==${TORCH_VERSION}" "nvidia-cufile==1.15.1.6" "nvidia-cusparselt-cu13==0.8.0"
        "nvidia-nvshmem-cu13==3.4.5")
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
CACHE=${RX_CUDA_CACHE:-$HOME/.cache/resnext-cuda}
SITE="$CACHE/torch-${TORCH_VERSION}"
BUILD=${RX_CUDA_BUILD_DIR:-build-cuda}

targets=()
if [ "${1:-}" = "--targets" ]; then
  read -r -a targets <<<"$2"
  shift 2
fi

if [ ! -x "$CUDA_HOME/bin/nvcc" ] || [ ! -f "$CUDA_HOME/include/nccl.h" ]; then
  echo "build_cuda: no CUDA toolkit with NCCL at $CUDA_HOME (set CUDA_HOME)" >&2
  exit 2
fi

# The wheel's files are installed into a temporary folder and renamed into place, so an interrupted
# download never leaves a half-installed cache that a later run would trust.
if [ ! -f "$SITE/.complete" ]; then
  echo "build_cuda: installing ${WHEELS[*]} into $SITE (once)"
  PIP=(python3 -m pip)
  "${PIP[@]}" --version >/dev/null 2>&1 || { echo "build_cuda: needs python3 with pip" >&2; exit 2; }
  rm -rf "$SITE.partial"
  mkdir -p "$CACHE"
  "${PIP[@]}" install -q --no-deps --no-compile --disable-pip-version-check --target "$SITE.partial" "${WHEELS[@]}"
  touch "$SITE.partial/.complete"
  rm -rf "$SITE"
  mv "$SITE.partial" "$SITE"
fi

# [Debian fmt first] The wheel ships fmt 12 headers in torch/include/fmt; Debian's spdlog is built
# against Debian's fmt 9. CMakeLists.txt puts RX_FMT_INCLUDE_DIR before LibTorch's include folders.
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$SITE/torch" \
  -DCUDAToolkit_ROOT="$CUDA_HOME" -DRX_REQUIRE_CUDA=ON "$@" \
  > "$BUILD.configure.log" 2>&1 || { cat "$BUILD.configure.log"; exit 1; }
grep -q "resnext: CUDA/NCCL path ON" "$BUILD.configure.log" || { cat "$BUILD.configure.log"; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" ${targets[@]:+--target "${targets[@]}"}
echo "build_cuda: $BUILD built against LibTorch $TORCH_VERSION (CUDA) from $SITE"
