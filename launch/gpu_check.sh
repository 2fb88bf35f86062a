#!/usr/bin/env bash
# The GPU check in two steps (README "GPU clusters"):
#
#   launch/gpu_check.sh --bundle DIR        here (Debian 12 + /usr/local/cuda): builds the CUDA build
#                                           (launch/build_cuda.sh) and puts into DIR what a bare GPU
#                                           machine lacks; prints its size (at most 60 MiB)
#   launch/gpu_check.sh --run DIR OUTDIR    there, from the repository root: checks the GPU, the torch
#                                           version and the bundle, runs the gpu tests and the GPU
#                                           benchmark, writes OUTDIR/gpu_report.json, prints a table
#
# [Bundle] The GPU machine has CUDA, a Python PyTorch 2.11 (its C++ LibTorch and NVIDIA libraries in
# site-packages), cmake and ninja, but no Open MPI, spdlog, fmt, Boost, nlohmann_json or GTest, and no
# package registry. DIR holds: build/ (the worker and GPU test binaries, built here against the same
# LibTorch version, stripped, in the build tree's layout), lib/ (the Debian libraries they need beyond
# glibc), mpi/ (a relocatable Open MPI, launch/gpu/bundle_mpi.sh), sysroot/ (exactly the headers the
# build included, the dev libraries and CMake package files, for a rebuild there), manifest.json (the
# gpu tests from CTest, with portable paths) and torch-version.
# [Fallback build] When the machine's torch differs from the bundle's, or the bundled binaries do not
# load there, --run rebuilds the worker and GPU tests there (RX_WORKER_ONLY) against the machine's
# own LibTorch with sysroot/. RX_GPU_CHECK_REBUILD=1 forces that path. RX_GPU_CHECK_NO_GPU=1 lets
# --run go on without a GPU (every GPU test then skips): how the script is tried on a CPU machine.
# RX_GPU_TESTS=a,b runs only those gpu tests (CTest names); RX_BENCH_BUDGET, RX_BENCH_CASES,
# RX_BENCH_VARIANTS and RX_BENCH_NO_COMPILE size the benchmark (bench/gpu/gpu_bench.py);
# RX_BENCH_WORKER=PATH benchmarks another worker binary (an A/B of two builds in one call).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)
LIMIT_MIB=60

die() { echo "gpu_check: $*" >&2; exit 1; }

bundle() {
  local dir=$1 build=${RX_CUDA_BUILD_DIR:-build-cuda}
  launch/build_cuda.sh --targets "resnext_worker gpu_nccl_test gpu_shared_ranks_test gpu_training_test"
  rm -rf "$dir"
  mkdir -p "$dir/build/worker" "$dir/build/tests/gpu" "$dir/lib"
  dir=$(cd "$dir" && pwd)
  local bins=(worker/resnext_worker tests/gpu/gpu_nccl_test tests/gpu/gpu_shared_ranks_test tests/gpu/gpu_training_test)
  for b in "${bins[@]}"; do strip --strip-unneeded -o "$dir/build/$b" "$build/$b"; done
  launch/gpu/bundle_mpi.sh "$dir/mpi" >/dev/null
  # Debian libraries the binaries need, other than glibc/gcc runtime (always there), LibTorch and
  # CUDA (the machine's own) and what mpi/ already carries.
  local lib
  for b in "${bins[@]}"; do ldd "$build/$b"; done | awk '$3 ~ /^\// {print $3}' | sort -u | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libgcc_s.so*|libstdc++.so*|libz.so*) continue ;;
    esac
    case "$lib" in /usr/local/*|*/torch/lib/*|*/nvidia/*) continue ;; esac
    [ -e "$dir/mpi/lib/$(basename "$lib")" ] || cp -L "$lib" "$dir/lib/"
  done
  python3 launch/gpu/gpu_check.py manifest "$build" "$SRC" "$dir/manifest.json"
  sed -n 's/^TORCH_VERSION=//p' launch/build_cuda.sh > "$dir/torch-version"
  make_sysroot "$build" "$dir/sysroot"
  local mib
  mib=$(du -sm "$dir" | cut -f1)
  echo "gpu_check: bundle $dir is ${mib} MiB (limit ${LIMIT_MIB})"; du -sh "$dir"/* | sed 's/^/  /'
  [ "$mib" -le "$LIMIT_MIB" ] || die "bundle over ${LIMIT_MIB} MiB"
}

# The headers of the libraries the GPU machine lacks (whole header trees; Boost as the closure of the
# libraries this build included, [Header closure] in launch/gpu/gpu_check.py), packed into
# sysroot/headers.tar.xz (unpacked only by a fallback build), their dev libraries, and CMake package
# files: enough to rebuild there.
make_sysroot() {
  local build=$1 root=$2 ml=/usr/lib/x86_64-linux-gnu bundle
  bundle=$(dirname "$root")
  mkdir -p "$root/usr/lib/x86_64-linux-gnu/cmake"
  # MPI headers go where the relocated Open MPI reports its include folder (ompi_info --path incdir,
  # which CMake's FindMPI asks), inside mpi/.
  local mpi_inc
  mpi_inc=mpi/$(ompi_info --path incdir --parsable | sed -n 's|^path:incdir:/usr/||p')
  local list=$bundle/.headers
  (cd /usr/include && ls -d spdlog fmt nlohmann gtest gmock openssl x86_64-linux-gnu/openssl zlib.h zconf.h) |
    sed 's|^|usr/include/|' > "$list"
  ninja -C "$build" -t deps | awk '/^ +\/usr\/include\/boost\//{print $1}' |
    python3 launch/gpu/gpu_check.py boost-closure /usr/include/boost | sed 's|^|usr/include/boost/|' >> "$list"
  tar -cJf "$root/headers.tar.xz" -C / --transform "s|^${ml#/}/openmpi/include|$mpi_inc|" \
    --transform "s|^usr/include|sysroot/usr/include|" -T "$list" "${ml#/}/openmpi/include"
  rm "$list"
  local l
  for l in libspdlog.so libfmt.so libcrypto.so libz.so libgtest.a libgtest_main.a libgmock.a libgmock_main.a; do  # the link and its file
    cp -P "$ml/$l" "$root/usr/lib/x86_64-linux-gnu/"
    cp -L "$(readlink -f "$ml/$l")" "$root/usr/lib/x86_64-linux-gnu/"
  done
  cp -r "$ml/cmake/spdlog" "$ml/cmake/fmt" "$ml/cmake/GTest" "$root/usr/lib/x86_64-linux-gnu/cmake/"
  local nj  # nlohmann_json's package files locate its headers relative to themselves: same place
  nj=$(dirname "$(find /usr/share/cmake /usr/lib/cmake $ml/cmake -name nlohmann_jsonConfig.cmake 2>/dev/null | head -n1)")
  mkdir -p "$root$(dirname "$nj")" && cp -r "$nj" "$root$nj"
}

# Rebuilds the worker and the GPU tests on the GPU machine against its own LibTorch ([Fallback build]).
rebuild_there() {
  local dir=$1 torch_dir=$2 site=$3 out=/tmp/rx-gpu-build root=$1/sysroot
  # Python's tarfile, not tar -J: the image is not known to have xz.
  python3 -c 'import sys, tarfile; t = tarfile.open(sys.argv[1]); t.extraction_filter = getattr(tarfile, "data_filter", None); t.extractall(sys.argv[2])' \
    "$root/headers.tar.xz" "$dir" || die "fallback build: cannot unpack $root/headers.tar.xz"
  local nccl_h
  nccl_h=$(find "$site/nvidia" /usr/local/cuda/include -name nccl.h 2>/dev/null | head -n1)
  [ -n "$nccl_h" ] || die "fallback build: no nccl.h in $site/nvidia or /usr/local/cuda"
  export NCCL_HOME; NCCL_HOME=$(dirname "$(dirname "$nccl_h")")
  cmake -S "$SRC" -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRX_WORKER_ONLY=ON -DRX_REQUIRE_CUDA=ON \
    -DCMAKE_PREFIX_PATH="$torch_dir;$root/usr" -DBoost_NO_BOOST_CMAKE=ON -DBOOST_INCLUDEDIR="$root/usr/include" \
    -DOPENSSL_ROOT_DIR="$root/usr" -DZLIB_ROOT="$root/usr" -DGTEST_ROOT="$root/usr" \
    -DMPI_C_HEADER_DIR="$(find "$dir/mpi" -name mpi.h -printf '%h\n' | head -n1)" -DMPI_C_LIB_NAMES=mpi -DMPI_mpi_LIBRARY="$dir/mpi/lib/libmpi.so.40" \
    -DMPIEXEC_EXECUTABLE="$dir/mpi/bin/mpiexec" > "$out.configure.log" 2>&1 || { tail -40 "$out.configure.log"; die "fallback configure failed"; }
  cmake --build "$out" -j "$(nproc)" --target resnext_worker gpu_nccl_test gpu_shared_ranks_test gpu_training_test \
    > "$out.build.log" 2>&1 || { tail -40 "$out.build.log"; die "fallback build failed"; }
  python3 launch/gpu/gpu_check.py manifest "$out" "$SRC" "$out/manifest.json" >/dev/null
  echo "$out"
}

run() {
  local dir outdir t0=$SECONDS
  dir=$(cd "$1" && pwd); outdir=$2
  mkdir -p "$outdir"; outdir=$(cd "$outdir" && pwd)
  [ -f "$dir/manifest.json" ] && [ -x "$dir/build/worker/resnext_worker" ] || die "$dir is not a bundle (run --bundle first)"
  if nvidia-smi -L >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/gpu_check: GPU /'
  elif [ "${RX_GPU_CHECK_NO_GPU:-0}" = 1 ]; then
    echo "gpu_check: no GPU (RX_GPU_CHECK_NO_GPU=1): the GPU tests will report themselves skipped"
  else
    die "no NVIDIA GPU visible (nvidia-smi -L failed)"
  fi
  local py=${PYTHON:-python3} info torch_version torch_dir site
  info=$("$py" -c 'import os, torch; print(torch.__version__.split("+")[0], os.path.dirname(torch.__file__), torch.version.cuda)') \
    || die "$py has no torch: the GPU machine's PyTorch provides LibTorch (set PYTHON)"
  read -r torch_version torch_dir _ <<<"$info"
  site=$(dirname "$torch_dir")
  echo "gpu_check: torch $torch_version at $torch_dir; bundle built for $(cat "$dir/torch-version")"
  # One consistent set of libraries: the bundle's Debian ones, then this torch and its NVIDIA wheels.
  local nv
  nv=$(find "$site/nvidia" -maxdepth 3 -type d -name lib 2>/dev/null | tr '\n' ':')
  # shellcheck disable=SC1091
  source "$dir/mpi/env.sh"
  export LD_LIBRARY_PATH="$dir/lib:$dir/mpi/lib:$torch_dir/lib:$nv${LD_LIBRARY_PATH:-}"
  local build=$dir/build manifest=$dir/manifest.json path=bundle
  if [ "$torch_version" != "$(cat "$dir/torch-version")" ] || [ "${RX_GPU_CHECK_REBUILD:-0}" = 1 ] ||
     ! "$build/worker/resnext_worker" devices; then
    echo "gpu_check: building there against torch $torch_version (fallback)"
    build=$(rebuild_there "$dir" "$torch_dir" "$site") || exit 1
    manifest=$build/manifest.json path=rebuilt
    "$build/worker/resnext_worker" devices || die "the rebuilt worker does not run"
  fi
  echo "gpu_check: running the gpu tests ($path binaries, $((SECONDS - t0)) s so far)"
  local rc=0
  python3 launch/gpu/gpu_check.py run "$manifest" "$build" "$SRC" "$outdir" --path "$path" --torch "$torch_version" \
    --bench-budget "${RX_BENCH_BUDGET:-200}" || rc=$?
  echo "gpu_check: done in $((SECONDS - t0)) s"
  return $rc
}

case "${1:-}" in
  --bundle) [ $# -eq 2 ] || die "usage: $0 --bundle DIR"; bundle "$2" ;;
  --run) [ $# -eq 3 ] || die "usage: $0 --run DIR OUTDIR"; run "$2" "$3" ;;
  *) echo "usage: $0 --bundle DIR | --run DIR OUTDIR" >&2; exit 2 ;;
esac
