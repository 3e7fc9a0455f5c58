"""Issue 21's hurdle floor on MR: does a hurdled search reach the plain search's best validation accuracy in at most
half its train steps? Plain aging evolution against earlier hurdles, alone and with weight inheritance.

Command (from the repository root; ../shared/data holds mr/rt-polarity.neg and mr/rt-polarity.pos):
    evonas data import --name mr --data-dir runs/mr/data --format lines --encoding cp1252 \\
        --train neg=../shared/data/mr/rt-polarity.neg --train pos=../shared/data/mr/rt-polarity.pos
    evonas ablate experiments/configs/hurdles_mr.py --out runs/hurdles_mr

The search of `compute_ablation_mr.py` (`evonas search --dataset mr`, one epoch of 275 steps per child at batch 32,
the built-in task's default space, 64 children), seeds 0-4, in 3 cells: plain; `--hurdle-steps 50 125` (at the
stage's mean: the children above it train on); those hurdles with `--inherit`. The hurdles come earlier than that
ablation's 75 and 150, so that a hurdled search spends under half the plain one's steps. Each cell is compared with
the plain search seed by seed: best validation accuracy (MR's carved validation sentences), train steps and
seconds. Test accuracy is not read.

Expected runtime: about 15 minutes on a quiet 2-core CPU (15 searches of 45-90 s).
Expected result: experiments/README.md, "Earlier hurdles on MR" (results/hurdles_mr.json).
"""

from common import is_smoke
from compute_ablation_mr import get_config  # noqa: F401 (the ablation's search, which this config runs too)

HURDLES = [50, 125]  # of 275 steps: after about a fifth and a half of the epoch


def get_ablation(arg: str | None = None) -> dict:
    """Plain first, so that the table tests every other cell against it; 5 seeds (2 for `smoke`)."""
    smoke = is_smoke(arg)
    hurdles = [5] if smoke else HURDLES
    return {"cells": [{}, {"hurdle_steps": hurdles}, {"hurdle_steps": hurdles, "inherit": True}],
            "seeds": [0, 1] if smoke else [0, 1, 2, 3, 4], "metric": "best_val_accuracy"}
