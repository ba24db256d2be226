#!/usr/bin/env bash
# PyPI's torch wheel is built with CUDA, and LibTorch's CMake config needs a CUDA toolkit
# (nvcc and its headers) even for a CPU-only build. Sourced by the build scripts: where the
# machine has a toolkit (nvcc on PATH or in $CUDA_HOME, default /usr/local/cuda) it does
# nothing; elsewhere (a plain Debian box) `cuda_toolkit_from_pypi` installs the compiler's
# wheels that match torch's CUDA runtime into .venv and shapes their folder as CMake's FindCUDA
# expects, and `use_cuda_toolkit` puts that nvcc on PATH.

system_cuda_toolkit() {
  command -v nvcc >/dev/null || [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]
}

# The folder the nvidia-* wheels of torch's CUDA share (site-packages/nvidia/cu13).
pypi_cuda_root() {
  .venv/bin/python - <<'PY'
import importlib.metadata as m, pathlib
runtime = next(d for d in m.distributions() if d.metadata["Name"] == "nvidia-cuda-runtime")
header = next(f for f in runtime.files if f.name == "cuda_runtime.h")
print(pathlib.Path(runtime.locate_file(header)).resolve().parent.parent)
PY
}

cuda_toolkit_from_pypi() {
  system_cuda_toolkit && return 0
  local runtime root series
  runtime=$(.venv/bin/python -c \
    'import importlib.metadata as m; print(m.version("nvidia-cuda-runtime"))')
  series=$(echo "$runtime" | cut -d. -f1,2)
  root=$(pypi_cuda_root)
  if [ ! -x "$root/bin/nvcc" ] || [ ! -d "$root/include/crt" ] || [ ! -d "$root/nvvm" ]; then
    echo "setup: no CUDA toolkit on this machine: installing nvcc $series.* from PyPI into .venv"
    .venv/bin/pip install -q --disable-pip-version-check "nvidia-cuda-nvcc==$series.*" \
      "nvidia-cuda-crt==$series.*" "nvidia-nvvm==$series.*" "nvidia-cuda-cccl==$series.*"
  fi
  # FindCUDA and nvcc's own profile look for the libraries in lib64 under unversioned names.
  ln -sfn lib "$root/lib64"
  local library
  for library in "$root"/lib/lib*.so.*; do
    local unversioned=${library%%.so.*}.so
    [ -e "$unversioned" ] || ln -s "$(basename "$library")" "$unversioned"
  done
}

# PATH with the wheels' nvcc where the machine has no toolkit; exports
# EXFUSION_CUDA_FROM_PYPI=1 then, so that builds leave our own CUDA kernels out (nothing here
# could run them, and a plain box's first build stays short).
use_cuda_toolkit() {
  system_cuda_toolkit && return 0
  local root
  root=$(pypi_cuda_root)
  if [ ! -x "$root/bin/nvcc" ]; then
    echo "no CUDA toolkit found (nvcc): run scripts/setup.sh, which installs one from PyPI" >&2
    return 1
  fi
  export PATH="$root/bin:$PATH"
  export EXFUSION_CUDA_FROM_PYPI=1
}
