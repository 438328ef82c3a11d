"""The C code under coverage-guided fuzzing for a minute, on every CI run: tools/fuzz.sh must find nothing.

tools/fuzz.sh builds the libFuzzer targets of recpack/jpeg/fuzz/ with AddressSanitizer and
UndefinedBehaviorSanitizer and runs each for its share of the minute, on the corpus earlier runs grew
(.fuzz/corpus) plus seeds from the test photos.  Its first run on a machine also installs clang from
Debian and builds libjpeg-turbo with ASan (about two minutes more).  Skip it with
``pytest -m "not fuzz_native"``; run it alone, longer, with ``bash tools/fuzz.sh --seconds 600``.
"""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SECONDS = 60


@pytest.mark.fuzz_native
@pytest.mark.timeout(30 * 60)  # a first run installs and builds; pytest-timeout's default would cut it short
def test_a_minute_of_fuzzing_the_c_code_finds_nothing():
    result = subprocess.run(["bash", str(ROOT / "tools" / "fuzz.sh"), "--seconds", str(SECONDS)],
                            capture_output=True, text=True, timeout=30 * 60)
    # the report (sanitizer output, reproducing command) is on stderr; the per-target figures on stdout
    assert result.returncode == 0, f"tools/fuzz.sh found something:\n{result.stdout}\n{result.stderr[-6000:]}"
    assert "no findings" in result.stderr
