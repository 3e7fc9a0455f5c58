"""The final norm on real text: hand-picked genomes retrained with a LayerNorm before their pooling and without one.

Command (about 10 minutes on a quiet 2-core CPU; RUN is any finished search on the dataset, for its data and
tokenizer, e.g. the run that `experiments/budget_run.py --dataset mr` leaves in WORK/run):
    python experiments/final_norm.py --run /tmp/mr-budget30/run --work /tmp/final-norm \\
        --out experiments/results/final_norm_mr.json

Every candidate appears twice, once with each final norm, in one copy of RUN whose history holds only them,
retrained together by `evonas.retrain.retrain` (`--top-k`, every candidate and seed in one population, each member
keeping its best validation step): the rule `evonas retrain` follows. Test accuracy is read, never used to pick.
"""

import time

import numpy as np
from retrain_length import print_rows, retrain_candidates, save_study, study_parser

from evonas.space import text_classifier_space

FINAL_NORMS = ("layernorm", "none")
SPACE = text_classifier_space(max_blocks=1, ops=("identity", "conv3", "gru"), widths=(64, 128),
                              dropouts=(0.1, 0.3, 0.5), final_norms=FINAL_NORMS)
BASE = {"num_blocks": 1, "block0_activation": "relu", "block0_norm": "none", "heads": 4, "ffn_expansion": 1,
        "positional": "none", "weight_decay": 0.0, "optimizer": "adamw"}
GENOMES = [
    {"block0_op": "identity", "width": 64, "dropout": 0.1, "pooling": "mean", "learning_rate": 0.003},  # MR's winner
    {"block0_op": "identity", "width": 128, "dropout": 0.1, "pooling": "max", "learning_rate": 0.003},
    {"block0_op": "conv3", "width": 128, "dropout": 0.5, "pooling": "max", "learning_rate": 0.001},  # Kim's shape
    {"block0_op": "gru", "width": 64, "dropout": 0.3, "pooling": "max", "learning_rate": 0.003},
]
CANDIDATES = [g | {"final_norm": n} for g in GENOMES for n in FINAL_NORMS]


def main() -> None:
    args = study_parser(__doc__, "/tmp/final-norm", "experiments/results/final_norm_mr.json").parse_args()
    start = time.perf_counter()
    results, rows = retrain_candidates(args.run, args.work, args.seeds, SPACE, CANDIDATES, BASE)
    summary = {n: {split: float(np.mean([r[f"{split}_accuracies"] for r in rows if r["candidate"]["final_norm"] == n]))
                   for split in ("validation", "test")} for n in FINAL_NORMS}
    print_rows(rows, ("block0_op", "width", "pooling", "final_norm"))
    for n, s in summary.items():
        print(f"final norm {n}: validation {s['validation']:.4f}, test {s['test']:.4f} (mean over {len(GENOMES)} "
              f"genomes x {args.seeds} seeds)")
    save_study(args, results, rows, start, summary=summary)

if __name__ == "__main__":
    main()
