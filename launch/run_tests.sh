#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs the whole suite with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
launch/setup.sh
launch/build.sh
# e2e tests reserve both cores (PROCESSORS 2), so -j2 only overlaps the light ones.
ctest --test-dir build --output-on-failure -j 2 "$@"
