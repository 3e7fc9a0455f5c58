"""Issue 21's hurdle floor on the built-in task, per seed: the default search against hurdles after 25 and 75 of
its 150 steps (at the stage's mean), alone and with weight inheritance: the hurdle cells of
`compute_ablation.py`, rerun so that `reach_plain_best.py` can read their histories.

Command (from the repository root):
    evonas ablate experiments/configs/hurdles_listops.py --out runs/hurdles_listops
    python experiments/reach_plain_best.py runs/hurdles_listops --plain "hurdle_steps=None,inherit=False" \\
        --out experiments/results/hurdles_listops_reach.json

Expected runtime: about 6 minutes on a quiet 2-core CPU (15 searches of 20-25 s).
Expected result: experiments/README.md, "Earlier hurdles on MR" (its table of the built-in task).
"""

from common import is_smoke
from compute_ablation import get_config  # noqa: F401 (the ablation's search, which this config runs too)

HURDLES = [25, 75]  # of 150 steps


def get_ablation(arg: str | None = None) -> dict:
    """Plain first, so that the table tests every other cell against it; 5 seeds (2 for `smoke`)."""
    smoke = is_smoke(arg)
    hurdles = [2] if smoke else HURDLES  # the smoke search has 4 steps
    return {"cells": [{}, {"hurdle_steps": hurdles}, {"hurdle_steps": hurdles, "inherit": True}],
            "seeds": [0, 1] if smoke else [0, 1, 2, 3, 4], "metric": "best_val_accuracy"}
