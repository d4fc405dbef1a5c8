"""The label-efficiency benchmark: which method gives more Dice per label, on your data and on the built-in tasks.

A thin command line over :mod:`common.benchmark` (``--help`` for the options; ``docs/label_efficiency.md``).

    python benchmarks/label_efficiency.py --dataset-dir DIR --labelled 4 8 [--quick] [--out OUT]
    python benchmarks/label_efficiency.py --task cluttered_mnist
    python benchmarks/label_efficiency.py --report
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common.benchmark.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
