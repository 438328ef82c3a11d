"""Benchmark suite entry point for its image corpus.

Thin wrapper so benchmarks and tests share one generator (tools/corpus.py);
same flags: ``python benchmarks/make_corpus.py OUT --images N --classes C --seed S``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

from corpus import main, make_imagenet_like  # noqa: E402,F401  (re-exported)

if __name__ == "__main__":
    sys.exit(main(prog="make_corpus.py"))
