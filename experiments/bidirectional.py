"""A recurrent cell read both ways against one read left to right: hand-picked genomes retrained side by side.

Command (about 25 minutes on a quiet 2-core CPU for SST-2; RUN is any finished search on the dataset, for its data
and tokenizer, e.g. the run that `experiments/budget_run.py --dataset sst2` leaves in WORK/run):
    python experiments/bidirectional.py --run /tmp/sst2-budget30/run --work /tmp/bidirectional \\
        --out experiments/results/bidirectional_sst2.json

Every genome appears once with each op of `OPS`, in one copy of RUN whose history holds only them, retrained
together by `evonas.retrain.retrain` (`--top-k`, every candidate and seed in one population, each member keeping
its best validation step): the rule `evonas retrain` follows. Test accuracy is read, never used to pick.
"""

import time

from retrain_length import print_rows, retrain_candidates, save_study, study_parser

from evonas.space import text_classifier_space

OPS = ("gru", "bigru")
SPACE = text_classifier_space(max_blocks=1, ops=("identity", *OPS), widths=(64, 128), dropouts=(0.1, 0.3, 0.5),
                              final_norms=("layernorm", "none"))
BASE = {"num_blocks": 1, "block0_activation": "gelu", "block0_norm": "none", "heads": 2, "ffn_expansion": 1,
        "positional": "none", "weight_decay": 0.0, "optimizer": "adamw", "final_norm": "layernorm"}
# SST-2's re-planning --budget 30 winner (a GRU of width 128 after an identity block, which is this one block).
GENOMES = [{"width": 128, "dropout": 0.1, "pooling": "max", "learning_rate": 0.003}]
CANDIDATES = [g | {"block0_op": op} for g in GENOMES for op in OPS]


def main() -> None:
    args = study_parser(__doc__, "/tmp/bidirectional", "experiments/results/bidirectional_sst2.json").parse_args()
    start = time.perf_counter()
    results, rows = retrain_candidates(args.run, args.work, args.seeds, SPACE, CANDIDATES, BASE)
    print_rows(rows, ("block0_op", "width"))
    save_study(args, results, rows, start)

if __name__ == "__main__":
    main()
