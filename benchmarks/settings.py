"""Where every benchmark keeps its things, and what they all share.

Standard library only: child processes inside benchmarks/.venv-mxnet (which
has neither recpack nor our other dependencies) import it too.
"""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work"  # corpora, packed data, logs: cached between runs, never committed
RESULTS = HERE / "results"  # the reports the README quotes
MXNET_PYTHON = HERE / ".venv-mxnet" / "bin" / "python"  # tools/setup_mxnet_venv.sh
CPUS = os.cpu_count() or 1
RUN_TIMEOUT_S = 1800  # one child process (a contender's run, a packer) at the most


class Unavailable(Exception):
    """A contender that cannot run here (not installed, not built yet): reported, not fatal."""
