#!/usr/bin/env bash
# Installs eisim's Debian dependencies if any is missing (needs root or sudo). Fast when all
# are present: it checks with dpkg first and only then runs apt-get. Extra package names given as
# arguments are checked and installed the same way (scripts/fuzz.sh adds clang and libFuzzer).
set -euo pipefail
packages=(build-essential cmake clang-format libboost-dev libeigen3-dev liblapack-dev libhdf5-dev
          libyaml-cpp-dev doctest-dev libcli11-dev libbenchmark-dev zlib1g-dev dataset-fashion-mnist
          python3-h5py python3-matplotlib python3-numpy ccache "$@")
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install_deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
