"""Does weight inheritance (--inherit) help aging evolution on the built-in task at the default budget?

Command (from the repository root):
    evonas ablate experiments/configs/inheritance.py --out runs/inheritance
    evonas ablate experiments/configs/inheritance.py:smoke --out /tmp/inherit-smoke   # CI: about a minute

The default `evonas search` (experiments/configs/listops.py) with `inherit` false and true, seeds 0-2, the same
data, children and train steps (96 x 150) for both: 6 ordinary run directories, runs/inheritance/inherit=*/seed*,
and results.md/.csv/.json with each cell's best validation accuracy (mean ± sd over seeds), the paired t-test
of --inherit against the plain search, and the mean seconds per run. A rerun skips the finished searches.

Expected runtime: 6 searches of 30-50 s each on a quiet 2-core CPU; minutes more on a loaded one.
Expected result: experiments/README.md, "Weight inheritance" (results/inheritance.json). The smoke run's
accuracies mean nothing.
"""

from common import is_smoke
from listops import get_config as listops_config


def get_config(arg: str | None = None) -> dict:
    """The search every cell shares: the default ListOps search (tiny for `smoke`)."""
    return listops_config(arg)


def get_ablation(arg: str | None = None) -> dict:
    """The plain search first, so that the table tests --inherit against it; 3 seeds (2 for `smoke`)."""
    return {"grid": {"inherit": [False, True]}, "seeds": [0, 1] if is_smoke(arg) else [0, 1, 2],
            "metric": "best_val_accuracy"}
