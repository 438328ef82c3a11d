#!/usr/bin/env bash
# Set up recpack on a fresh Debian/Ubuntu machine: system libraries, then a venv in .venv.
#
#   bash tools/setup.sh          # idempotent; rerunning only checks what is there
#
# Pillow: recpack wants pillow-simd (SIMD resize, several times faster) and
# builds it from source against the system libjpeg-turbo; where that build
# fails (no compiler, an unsupported CPU), it installs plain Pillow instead and
# says so.  Both provide the same `PIL` module.  Pillow is therefore not a
# dependency in pyproject.toml: pip would otherwise install it over pillow-simd.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source tools/lib.sh
apt_install_missing setup libturbojpeg0 libjpeg-dev zlib1g-dev libpng-dev libwebp-dev gcc python3-dev python3-venv

[ -x .venv/bin/python ] || python3 -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# The CPU build of torch, pinned: an unpinned torch pulls a multi-GB CUDA build.
"${pip[@]}" "torch==2.13.0"
if ! .venv/bin/python -c 'import PIL, importlib.metadata as m; m.version("pillow-simd")' 2>/dev/null; then
    if ! "${pip[@]}" --no-binary pillow-simd "pillow-simd==12.1.1.post0"; then
        echo "setup: pillow-simd did not build here; installing plain Pillow (slower resize)" >&2
        "${pip[@]}" "Pillow>=9"
    fi
fi
# scikit-image only for the real photos it ships (tools/corpus.py); --no-deps
# keeps its Pillow requirement from replacing pillow-simd.
"${pip[@]}" --no-deps "scikit-image==0.26.0"
# matplotlib for recpack stats --plot (the [plot] extra) and its test, with its requirements by name and
# --no-deps: its Pillow requirement would replace pillow-simd.
"${pip[@]}" --no-deps "matplotlib>=3.7" contourpy cycler fonttools kiwisolver pyparsing python-dateutil six
# s3/gcs/http: datasets at URLs; test-storage: the servers tests/test_storage*.py start on 127.0.0.1 (moto's S3,
# gcp-storage-emulator for gs://)
"${pip[@]}" -e ".[test,s3,gcs,http,test-storage]"
# the [spark] and [ray] extras, pinned, for tests/test_engines.py (recpack pack --engine); PySpark runs on a Java
# 17+ runtime, and the engine tests make a loopback-only network namespace with ip(8)
apt_install_missing setup openjdk-17-jre-headless iproute2
"${pip[@]}" "pyspark==4.3.0" "ray==2.60.0"
.venv/bin/python -c 'import recpack.pack.prepare, recpack.jpeg._libjpeg, recpack.jpeg._jpegscan' && echo "setup: ready (.venv/bin/recpack)" >&2
