#!/usr/bin/env bash
# Build the separate venv that holds MXNet, used by tests/test_mxnet_interop.py
# and by the MXNet rows of benchmarks/bench_pack.py and benchmarks/compare.py.
#
# Why a separate venv: MXNet 1.9.1 (the last release) does not import beside
# numpy >= 1.24 (it uses the removed np.bool alias), while recpack's own venv
# wants a current numpy.  So MXNet gets its own interpreter, pinned to
# numpy 1.23.5, and the tests talk to it only through tests/mxnet_probe.py.
#
# OpenCV: the im2rec.py the mxnet wheel ships (mxnet/tools/) imports cv2 even
# with --pass-through, and bench_pack.py runs that tool as it ships.
# It is pinned to 4.8.1.78, the release checked here beside numpy 1.23.5;
# installing it in the same pip call keeps numpy's pin.
#
# Usage: tools/setup_mxnet_venv.sh [VENV_DIR]   (default: benchmarks/.venv-mxnet)
# Idempotent: exits at once when VENV_DIR/bin/python already imports mxnet and cv2
# at those versions (a venv without cv2 is rebuilt).
# PYTHON picks the interpreter that creates the venv (default: python3).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${1:-$repo/benchmarks/.venv-mxnet}
python=${PYTHON:-python3}
ready_check='import numpy, mxnet, cv2
assert numpy.__version__ == "1.23.5" and mxnet.__version__ == "1.9.1" and cv2.__version__ == "4.8.1"'

is_ready() { [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$ready_check" >/dev/null 2>&1; }

if is_ready; then
    exit 0
fi

source "$repo/tools/lib.sh"
lock_folder_of "$venv"
if is_ready; then
    exit 0
fi

# libmxnet.so bundles libgfortran.so.3 and OpenBLAS but links the system's
# libgomp and libquadmath (and libstdc++/libgcc_s, which python3 already needs).
apt_install_missing setup_mxnet_venv libgomp1 libquadmath0

started=$SECONDS
"$python" -m venv --clear "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "mxnet==1.9.1" "numpy==1.23.5" \
    "opencv-python-headless==4.8.1.78"
if ! "$venv/bin/python" -c "$ready_check"; then
    echo "setup_mxnet_venv: $venv was built but does not import mxnet 1.9.1, numpy 1.23.5 and cv2 4.8.1" >&2
    exit 1
fi
echo "setup_mxnet_venv: built $venv in $((SECONDS - started)) s" >&2
