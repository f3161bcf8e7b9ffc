#!/usr/bin/env bash
# Fails if any C++ source differs from .clang-format. Usage: check_format.sh [clang-format]
set -euo pipefail
cf=${1:-clang-format}
cd "$(dirname "$0")/.."
files=$(git ls-files '*.cpp' '*.hpp' 2>/dev/null || find . -name '*.cpp' -o -name '*.hpp')
bad=0
for f in $files; do
  if ! diff -q <($cf --style=file "$f") "$f" >/dev/null; then
    echo "not formatted: $f (run: clang-format -i $f)"
    bad=1
  fi
done
if [ $bad -eq 0 ]; then echo "all $(echo $files | wc -w) C++ files formatted"; fi
exit $bad
