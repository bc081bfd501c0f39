#!/usr/bin/env bash
# Run the whole test suite on the oldest torch that pyproject.toml admits (torch 2.1,
# torchvision 0.16, with the numpy < 2 they were built against), in a virtual environment
# of its own, so that the floor the project states is a measured one.
#
#   tools/check_torch_floor.sh [VENV_DIR] [TORCH_VERSION TORCHVISION_VERSION]
#
# Defaults: .floor-venv, torch 2.1.2, torchvision 0.16.2. Needs a Python that the chosen
# torch has wheels for (3.8-3.11 for torch 2.1). PyPI's torch wheels for Linux are CUDA
# builds (about 3 GB with their CUDA libraries); they run on the CPU as well.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.floor-venv}
torch_version=${2:-2.1.2}
torchvision_version=${3:-0.16.2}
python3 -m venv "$venv"
# shellcheck disable=SC1091
source "$venv/bin/activate"
python -m pip install -q --upgrade pip
printf 'torch==%s\ntorchvision==%s\nnumpy<2\n' "$torch_version" "$torchvision_version" > "$venv/constraints.txt"
pip install -q -c "$venv/constraints.txt" ".[dev]"
python -c "import torch, torchvision, numpy; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'numpy', numpy.__version__)"
OMP_NUM_THREADS=1 python -m pytest -q -p no:cacheprovider
