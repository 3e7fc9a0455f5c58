"""Issue 21's ablation on the built-in task: hurdles, weight inheritance and the fitness predictor, alone and together.

Command (from the repository root):
    evonas ablate experiments/configs/compute_ablation.py --out runs/compute_ablation
    evonas ablate experiments/configs/compute_ablation.py:smoke --out /tmp/ablation-smoke   # CI: about a minute

The default `evonas search` (experiments/configs/listops.py: 96 children of 150 steps) in the 8 cells of
hurdles (none, or after 25 and 75 steps at the stage's mean) x `--inherit` (off, on) x `--predictor-pool`
(1, off, or 4), seeds 0-4: 40 ordinary run directories, runs/compute_ablation/CELL/seedN, and results.md/.csv/
.json with each cell's best validation accuracy (mean ± sd), its paired t-test against the plain search (the
first row), and the seconds and train steps each run spent (hurdles stop children early, so they spend fewer
steps for the same 96 children). A rerun skips the finished searches.

Expected runtime: 16 minutes on a quiet 2-core CPU (40 searches of 18-25 s).
Expected result (experiments/README.md, "Hurdles, inheritance and the predictor"; results/compute_ablation.json):
best validation accuracy .558 ± .038 plain; --inherit +.103 (p = 0.012); --inherit with --predictor-pool 4
+.173 (p = 0.005); hurdles alone -.012 in 48% of the steps (p = 0.40); hurdles with --inherit +.123 in 46% of
the steps (p = 0.0008). The smoke run's accuracies mean nothing.
"""

from common import is_smoke
from listops import get_config as listops_config


def get_config(arg: str | None = None) -> dict:
    """The search every cell shares: the default ListOps search (tiny for `smoke`, with room for one hurdle)."""
    return {**listops_config(arg), **({"steps": 4} if is_smoke(arg) else {})}


def get_ablation(arg: str | None = None) -> dict:
    """The plain search first, so that the table tests every other cell against it; 5 seeds (2 for `smoke`)."""
    smoke = is_smoke(arg)
    return {"grid": {"hurdle_steps": [None, [2] if smoke else [25, 75]], "inherit": [False, True],
                     "predictor_pool": [1, 4]},
            "seeds": [0, 1] if smoke else [0, 1, 2, 3, 4], "metric": "best_val_accuracy"}
