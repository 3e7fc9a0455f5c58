"""The default search on the built-in ListOps task (depth 2, 2 arguments), written out as a config to edit.

Command (from the repository root):
    evonas search --config experiments/configs/listops.py --out runs/listops
    evonas search --config experiments/configs/listops.py:smoke --out /tmp/listops-smoke   # CI: a few seconds

Expected runtime: 30-49 s on a 2-core CPU at load 0.6-2.3 (96 children of 150 steps; experiments/README.md,
"Evolution against random search"), plus about a minute of compiling on the first run of this space.
Expected result: best validation accuracy .568 ± .022 (mean ± sd over seeds 0-19; random search .530 ± .032).
The smoke run checks that the command works; its accuracy means nothing.
"""

from common import LISTOPS_SEARCH, LISTOPS_SMOKE, is_smoke


def get_config(arg: str | None = None) -> dict:
    """The search config; `arg` 'smoke' shrinks it to a run of seconds."""
    return {**LISTOPS_SEARCH, **(LISTOPS_SMOKE if is_smoke(arg) else {})}
