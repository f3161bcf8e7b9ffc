#!/usr/bin/env bash
# The README's main command: install what is missing, build, train and compare the learning
# rules (experiments/quickstart.yaml), then write results/quickstart.h5, a summary table and
# figures in results/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install_deps.sh
build=${EISIM_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DEISIM_BUILD_TESTS=OFF
cmake --build "$build" -j"$(nproc)" --target eisim
mkdir -p results
"$build/eisim" sweep --config experiments/quickstart.yaml --local --jobs "$(nproc)" --merge \
  --merged results/quickstart.h5 "$@"
/usr/bin/python3 analysis/report.py results/quickstart.h5 --out results/quickstart
echo "quickstart: results/quickstart.h5, results/quickstart/report.md and figures in results/quickstart/"
