#!/usr/bin/env bash
# Checks the C++ formatting against .clang-format with Debian 12's clang-format 14 and changes nothing:
# prints every tracked C++ file that clang-format would change and exits 1, or exits 0 when all are
# clean. Fix a file with `clang-format-14 -i FILE`.
#   launch/check_format.sh            every C++ file git tracks (*.cpp *.cc *.h *.hpp *.cu *.cuh)
#   launch/check_format.sh FILE...    only these
#   CHECK_FORMAT_VERBOSE=1            also print clang-format's diagnostics (the lines it would change)
# Another clang-format major version formats differently, so it is refused rather than trusted.
set -euo pipefail
cd "$(dirname "$0")/.."

cf="${CLANG_FORMAT:-}"
if [ -z "$cf" ]; then
  for c in clang-format-14 clang-format; do
    if command -v "$c" >/dev/null; then cf="$c"; break; fi
  done
fi
if [ -z "$cf" ]; then
  echo "check_format: clang-format not found (Debian: apt-get install clang-format; launch/setup.sh lists it)" >&2
  exit 2
fi
version="$("$cf" --version)"
if ! [[ "$version" =~ version\ 14\. ]]; then
  echo "check_format: need clang-format 14 (Debian 12's), $cf is: $version" >&2
  exit 2
fi

if [ $# -gt 0 ]; then
  files=("$@")
else
  mapfile -t files < <(git ls-files -- '*.cpp' '*.cc' '*.h' '*.hpp' '*.cu' '*.cuh')
fi

bad=0
for f in "${files[@]}"; do
  if ! out="$("$cf" --style=file --dry-run -Werror "$f" 2>&1)"; then
    echo "$f"
    [ "${CHECK_FORMAT_VERBOSE:-0}" = 1 ] && printf '%s\n' "$out" | sed 's/^/    /'
    bad=$((bad + 1))
  fi
done
if [ "$bad" -gt 0 ]; then
  echo "check_format: $bad of ${#files[@]} files are not formatted as .clang-format says ($cf)" >&2
  exit 1
fi
echo "check_format: all ${#files[@]} files formatted ($cf)"
