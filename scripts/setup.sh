#!/usr/bin/env bash
# Installs what charlm's build, tests and demo need on Debian/Ubuntu, then builds into build/.
# Idempotent: installs only missing packages and re-runs the (incremental) build.
#
#   scripts/setup.sh            packages + Release build in build/
#   scripts/setup.sh --extras   also python3-torch, python3-h5py, python3-matplotlib (reference
#                               checks, benchmarks, plots), slurm-wlm + munge (the test that
#                               runs a one-node SLURM cluster on this machine) and man-db +
#                               groff-base (the test that renders the man page): everything
#                               scripts/test.sh needs
#   BUILD_DIR=... CMAKE_ARGS="..." scripts/setup.sh   another build directory / cmake options
set -euo pipefail

cd "$(dirname "$0")/.."
packages=(build-essential cmake pkg-config openmpi-bin libopenmpi-dev libopenblas-dev
          libhdf5-dev hdf5-tools libinih-dev python3 fortunes fortunes-min)
if [[ "${1:-}" == "--extras" ]]; then
    packages+=(python3-torch python3-h5py python3-numpy python3-matplotlib slurm-wlm munge
              man-db groff-base)
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    echo "setup: installing ${missing[*]}"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

build="${BUILD_DIR:-build}"
# shellcheck disable=SC2086 # CMAKE_ARGS is a list of options
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-}
cmake --build "$build" -j "$(nproc)"
echo "setup: built $build/charlm"
