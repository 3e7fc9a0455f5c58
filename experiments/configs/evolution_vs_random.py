"""Does aging evolution beat random search on the built-in task at the default budget?

Command (from the repository root):
    evonas ablate experiments/configs/evolution_vs_random.py --out runs/evolution_vs_random
    evonas ablate experiments/configs/evolution_vs_random.py:smoke --out /tmp/evr-smoke   # CI: about a minute

The default `evonas search` (experiments/configs/listops.py) with `strategy` evolution and random, seeds 0-19,
the same data and budget for both: 40 ordinary run directories, runs/evolution_vs_random/strategy=*/seed*, and
results.md/.csv/.json with each strategy's best validation accuracy (mean ± sd over seeds) and random search's
paired t-test against evolution. Rerunning the command after a stop skips the finished searches.

Expected runtime: 40 searches of 30-49 s each on a 2-core CPU at load 0.6-2.3, about 25 minutes.
Expected result (experiments/README.md, "Evolution against random search", measured with the script this config
replaced; results/evolution_vs_random*.json): evolution .568 ± .022, random search .530 ± .032, evolution ahead
on 17 of 20 seeds by 3.8 points (paired t-test p = 0.0003). The smoke run's accuracies mean nothing.
"""

from common import is_smoke
from listops import get_config as listops_config


def get_config(arg: str | None = None) -> dict:
    """The search every cell shares: the default ListOps search (tiny for `smoke`)."""
    return listops_config(arg)


def get_ablation(arg: str | None = None) -> dict:
    """Evolution first, so that the table tests random search against it; 20 seeds (2 for `smoke`)."""
    return {"grid": {"strategy": ["evolution", "random"]}, "seeds": [0, 1] if is_smoke(arg) else list(range(20)),
            "metric": "best_val_accuracy"}
