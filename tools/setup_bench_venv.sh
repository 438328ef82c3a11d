#!/usr/bin/env bash
# Build the venv in which benchmarks/compare.py and benchmarks/bench_pack.py
# run recpack beside its peers.
#
# Why one venv for all of them: a read benchmark is only fair when every
# contender decodes with the same interpreter, torch, Pillow and libjpeg.  So
# recpack (editable, from this checkout) goes in beside webdataset,
# mosaicml-streaming, litdata and, where it builds, FFCV.  MXNet cannot join
# (it needs numpy < 1.24): it runs from tools/setup_mxnet_venv.sh's venv as a
# subprocess.
#
# torch 2.14.1 / torchvision 0.29.1 are the CUDA builds (~6 GB); pip takes
# them from this machine's local wheel index.  They run on the CPU here.
#
# PIL: pillow-simd built from source like tools/setup.sh, so the PIL-based
# peers get the same fast resize recpack gets; plain Pillow where it fails.
#
# Usage: tools/setup_bench_venv.sh [VENV_DIR]   (default: benchmarks/.venv-peers)
# Idempotent: exits at once when VENV_DIR/bin/python already imports everything.
# FFCV is tried once (SKIP_FFCV=1 skips it); its outcome is kept in
# VENV_DIR/ffcv-build.log and a failure does not fail this script.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${1:-$repo/benchmarks/.venv-peers}
python=${PYTHON:-python3}
ready_check='
import importlib.metadata as m
import torch, torchvision, webdataset, streaming, litdata, tfrecord, recpack, turbojpeg, PIL, matplotlib
assert torch.__version__.split("+")[0] == "2.14.1", torch.__version__
assert torchvision.__version__.split("+")[0] == "0.29.1", torchvision.__version__
'

is_ready() { [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$ready_check" >/dev/null 2>&1; }

if is_ready; then
    exit 0
fi

# Two runs may start at once: let one build while the other waits.
source "$repo/tools/lib.sh"
lock_folder_of "$venv"
if is_ready; then
    exit 0
fi

apt_install_missing setup_bench_venv libturbojpeg0 libjpeg-dev zlib1g-dev libpng-dev libwebp-dev gcc python3-dev

started=$SECONDS
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" "torch==2.14.1" "torchvision==0.29.1"
"${pip[@]}" webdataset mosaicml-streaming litdata tfrecord matplotlib \
    numpy "PyTurboJPEG>=1.8,<2" "lmdb>=1.4" "crc32c>=2.3" "tqdm>=4.60"
"${pip[@]}" --no-deps -e "$repo"

# The peers pull in Pillow; replace it with pillow-simd (same PIL module).
if ! "$venv/bin/python" -c 'import importlib.metadata as m; m.version("pillow-simd")' 2>/dev/null; then
    "$venv/bin/python" -m pip uninstall -q -y Pillow pillow 2>/dev/null || true
    if ! "${pip[@]}" --no-binary pillow-simd "pillow-simd==12.1.1.post0"; then
        echo "setup_bench_venv: pillow-simd did not build here; installing plain Pillow" >&2
        "${pip[@]}" "Pillow>=9"
    fi
fi

if ! "$venv/bin/python" -c "$ready_check"; then
    echo "setup_bench_venv: $venv was built but does not import all contenders" >&2
    exit 1
fi
echo "setup_bench_venv: core venv built in $((SECONDS - started)) s" >&2

# FFCV: optional, tried once.  It compiles a C extension against OpenCV and
# libturbojpeg (found through pkg-config) and needs numba.
ffcv_log=$venv/ffcv-build.log
if [ "${SKIP_FFCV:-0}" != 1 ] && [ ! -e "$ffcv_log" ]; then
    ffcv_started=$SECONDS
    {
        apt_install_missing setup_bench_venv libopencv-dev pkg-config libturbojpeg0-dev
        # --no-build-isolation: its setup.py imports numpy at build time.
        timeout 600 "$venv/bin/python" -m pip install --disable-pip-version-check \
            --no-build-isolation "ffcv==1.0.2" numba
        "$venv/bin/python" -c 'import ffcv.loader, ffcv.writer; print("ffcv imports")'
    } >"$ffcv_log" 2>&1 && ffcv_ok=1 || ffcv_ok=0
    if [ "$ffcv_ok" = 1 ]; then
        echo "FFCV: OK" >>"$ffcv_log"
        echo "setup_bench_venv: FFCV built in $((SECONDS - ffcv_started)) s" >&2
    else
        echo "FFCV: FAILED" >>"$ffcv_log"
        echo "setup_bench_venv: FFCV did not build (see $ffcv_log); compare.py reports it as not measured," \
            "bench_pack.py uses the issue's quoted writer figure instead" >&2
    fi
fi
echo "setup_bench_venv: ready in $((SECONDS - started)) s ($(du -sh "$venv" | cut -f1))" >&2
