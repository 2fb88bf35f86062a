#!/usr/bin/env bash
# Configures and builds the project into ./build (Release). Extra arguments go to cmake, e.g.
#   launch/build.sh -DCMAKE_PREFIX_PATH=/opt/libtorch-cuda
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" > build.configure.log 2>&1 || { cat build.configure.log; exit 1; }
cmake --build build -j "$(nproc)"
