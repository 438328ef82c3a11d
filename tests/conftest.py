"""Shared fixtures: small real-photo JPEGs and hostile inputs from tools/corpus.py, and a CLI runner."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))

import corpus  # noqa: E402  (tools/ is not a package)


def pytest_configure(config):
    config.addinivalue_line("markers", "mxnet: needs MXNet 1.9.1 in its own venv (built on first use)")
    config.addinivalue_line("markers", "fuzz_native: runs tools/fuzz.sh on the C code for a minute (installs clang and "
                            "builds an ASan libjpeg-turbo on first use); skip with -m 'not fuzz_native'")
    config.addinivalue_line("markers", "dali: needs NVIDIA DALI 2.4.0 in its own venv (built on first use, else skipped)")
    config.addinivalue_line("markers", "engines: packs on real PySpark / Ray in local mode inside a loopback-only "
                            "network namespace (~2 minutes; tools/setup.sh installs both); skip with -m 'not engines'")


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory):
    """60 small JPEGs cut from real photos, in two class folders."""
    root = tmp_path_factory.mktemp("photos")
    for label, name in enumerate(["cat", "dog"]):
        corpus.make_small_jpegs(root / name, 30, size=(64, 48), seed=label)
    return root


@pytest.fixture(scope="session")
def hostile(tmp_path_factory):
    return corpus.make_hostile_files(tmp_path_factory.mktemp("hostile"))


def run_cli(*args, check=True, env=None):
    """Run ``python -m recpack`` as a user would (in ``env``, by default this one); returns the CompletedProcess."""
    result = subprocess.run([sys.executable, "-m", "recpack", *map(str, args)], capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"recpack {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


@pytest.fixture(scope="session", autouse=True)
def children_take_ctrl_c():
    """Let the processes the tests start take SIGINT, even when pytest was started ignoring it.

    A non-interactive shell starts a background job (``pytest &``) with SIGINT ignored,
    an ignored signal stays ignored across exec, and a Python started so never raises
    KeyboardInterrupt: the Ctrl-C tests' children would run on.  A handler (unlike
    SIG_IGN) is reset to the default at exec, which Python turns into KeyboardInterrupt.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


def in_loopback_namespace(command: list[str], timeout: float, **environment: str) -> subprocess.CompletedProcess:
    """Run ``command`` in a new network namespace whose one interface is loopback (needs root).

    For what binds beyond 127.0.0.1 whatever it is told: Ray, torchrun's rendezvous store.
    """
    script = 'ip link set lo up && exec "$@"'
    return subprocess.run(["unshare", "--net", "sh", "-c", script, "sh", *command], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **environment})

