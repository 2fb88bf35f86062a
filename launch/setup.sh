#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian 12 machine. Idempotent: re-running it only
# re-checks. Every dependency comes from Debian's packages; nothing is downloaded at build time.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libtorch-dev                       # LibTorch 1.13 (CPU)
  libopenblas0-openmp                # the BLAS LibTorch recommends, on its OpenMP threads ([BLAS])
  libopenmpi-dev openmpi-bin         # MPI ranks and the CPU all-reduce
  libboost-dev                       # Boost.Asio / Boost.Beast (header-only)
  nlohmann-json3-dev libspdlog-dev libgtest-dev libgmock-dev
  libsqlite3-dev zlib1g-dev libssl-dev
  dataset-fashion-mnist              # real data: /usr/share/datasets/fashion-mnist
  python3 python3-torch python3-torchvision python3-numpy   # test-only cross-checks and the DDP baseline
  curl wrk procps psmisc
  libjs-chart.js                     # Chart.js, embedded in the coordinator's dashboard at build time
  chromium                           # headless browser for the dashboard test (tests/browser)
  clang-format                       # clang-format 14: launch/check_format.sh
  slurm-wlm munge                    # Slurm for the launcher tests (single- and two-node)
  util-linux mount                   # unshare, nsenter, mount: the two-node test fixture (tests/multinode)
  clang libclang-rt-14-dev           # libFuzzer + ASan/UBSan runtimes (launch/run_fuzz.sh, build-fuzz)
  python3-venv                       # the contract tests' cached PyPI venv (tests/contract/pydeps.py)
)
# [BLAS] libtorch-dev needs a libblas.so.3 and recommends OpenBLAS, which --no-install-recommends
# leaves out: Debian's reference BLAS then serves it. LibTorch's float32 convolutions mostly run in
# oneDNN, but its GEMMs (linear layers, the convolutions oneDNN declines, float64, python3-torch's
# too) call libblas.so.3: the `unit` tests took 150 s with the reference BLAS and 67 s with OpenBLAS
# on a 2-core CI-class VM. The OpenMP build shares LibTorch's OpenMP threads, so a rank's
# torch::set_num_threads bounds both.

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#PACKAGES[@]} packages present"
fi
