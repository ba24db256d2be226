#!/usr/bin/env bash
# Installs what exfusion needs and skips what is already there: Debian packages with
# apt-get, then torch==2.11.0 and the Python test tools into the project's .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(g++ cmake ninja-build ccache pkg-config libcli11-dev nlohmann-json3-dev libgtest-dev
          zlib1g-dev libyaml-cpp-dev libboost-dev libgloo-dev libturbojpeg0-dev libspng-dev
          python3 python3-venv dataset-fashion-mnist libsentencepiece-dev fortunes)
scripts/install_debian_packages.sh setup "${packages[@]}"

stamp=.venv/.requirements.sha256
wanted=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "setup: creating .venv with $(grep -c '^[a-z]' requirements.txt) Python packages (torch is large)"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  echo "$wanted" >"$stamp"
fi

# LibTorch's CMake config needs a CUDA toolkit even for a CPU build: the machine's, or else
# nvcc and its headers from PyPI into .venv (scripts/cuda_toolkit.sh).
source scripts/cuda_toolkit.sh
cuda_toolkit_from_pypi
