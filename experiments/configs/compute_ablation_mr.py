"""Issue 21's ablation on MR: plain aging evolution, then hurdles, weight inheritance and the fitness predictor,
each alone, and all three together.

Command (from the repository root; ../shared/data holds mr/rt-polarity.neg and mr/rt-polarity.pos):
    evonas data import --name mr --data-dir runs/mr/data --format lines --encoding cp1252 \\
        --train neg=../shared/data/mr/rt-polarity.neg --train pos=../shared/data/mr/rt-polarity.pos
    evonas ablate experiments/configs/compute_ablation_mr.py --out runs/compute_ablation_mr
The smoke form (`:smoke`) reads runs/mr-smoke/data, which experiments/text_benchmark.py's MR smoke run imports.

Every cell is `evonas search --dataset mr` with the real-text defaults (one epoch per child: 275 steps at batch 32,
48 tokens; the built-in task's default space, which real text got by default when this was measured; 16 members,
tournaments of 4, generations of 8) and 64 children, seeds 0-4. The cells: plain; `--hurdle-steps 75 150` (at the
stage's mean); `--inherit`; `--predictor-pool 4`; all three.
Each is compared with the plain search seed by seed: best validation accuracy (MR's 960 carved validation
sentences), the train steps the children received and the seconds. Test accuracy is not read.

Expected runtime: about 40 minutes on a quiet 2-core CPU (25 searches of 1-2 minutes).
Expected result: experiments/README.md, "Hurdles, inheritance and the predictor on MR"
(results/compute_ablation_mr.json).
"""

from common import LISTOPS_SEARCH, is_smoke, search_settings

HURDLES = [75, 150]  # of 275 steps: after about a quarter and a half of the epoch


def get_config(arg: str | None = None) -> dict:
    """The search every cell shares (tiny for `smoke`, with room for one hurdle)."""
    if is_smoke(arg):
        return {**search_settings(True, num_children=4, steps=10), "dataset": "mr", "data_dir": "runs/mr-smoke/data"}
    return {"dataset": "mr", "data_dir": "runs/mr/data", "num_children": 64, "space": LISTOPS_SEARCH["space"]}


def get_ablation(arg: str | None = None) -> dict:
    """Plain first, so that the table tests every other cell against it; 5 seeds (2 for `smoke`)."""
    smoke = is_smoke(arg)
    hurdles = [5] if smoke else HURDLES
    return {"cells": [{}, {"hurdle_steps": hurdles}, {"inherit": True}, {"predictor_pool": 4},
                      {"hurdle_steps": hurdles, "inherit": True, "predictor_pool": 4}],
            "seeds": [0, 1] if smoke else [0, 1, 2, 3, 4], "metric": "best_val_accuracy"}
