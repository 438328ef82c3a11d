#!/usr/bin/env bash
# Build the separate venv that holds NVIDIA DALI, used by tests/test_dali_interop.py to show that
# DALI's readers.mxnet reads a whole recpack dataset through its dataset.idx.
#
# Why a separate venv: DALI is a ~1 GB wheel with its own CUDA libraries, which recpack does not
# need; it runs on the CPU here (device_id=None), so no GPU is required.  The tests talk to it
# only through tests/dali_probe.py, which prints JSON.
#
# Usage: tools/setup_dali_venv.sh [VENV_DIR]   (default: benchmarks/.venv-dali)
# Idempotent: exits at once when VENV_DIR/bin/python already imports DALI at that version.
# PYTHON picks the interpreter that creates the venv (default: python3).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${1:-$repo/benchmarks/.venv-dali}
python=${PYTHON:-python3}
ready_check='import nvidia.dali as dali
assert dali.__version__ == "2.4.0", dali.__version__'

is_ready() { [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$ready_check" >/dev/null 2>&1; }

if is_ready; then
    exit 0
fi

source "$repo/tools/lib.sh"
lock_folder_of "$venv"
if is_ready; then
    exit 0
fi

started=$SECONDS
"$python" -m venv --clear "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "nvidia-dali-cuda120==2.4.0"
if ! "$venv/bin/python" -c "$ready_check"; then
    echo "setup_dali_venv: $venv was built but does not import nvidia.dali 2.4.0" >&2
    exit 1
fi
echo "setup_dali_venv: built $venv in $((SECONDS - started)) s ($(du -sh "$venv" | cut -f1))" >&2
