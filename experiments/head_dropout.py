"""Dropout of the pooled features before the head, as Kim (2014)'s CNN has it: hand-picked genomes retrained with
and without it.

Command (about 25 minutes on a quiet 2-core CPU for SST-2, 5 for MR; RUN is any finished search on the dataset, for
its data and tokenizer, e.g. the run that `experiments/budget_run.py --dataset sst2` leaves in WORK/run):
    python experiments/head_dropout.py --run /tmp/sst2-budget30/run --work /tmp/head-dropout \\
        --out experiments/results/head_dropout_sst2.json

Every genome of `GENOMES[dataset]` appears once with each rate of `RATES`, in one copy of RUN whose history holds
only them, retrained together by `evonas.retrain.retrain` (`--top-k`, every candidate and seed in one population,
each member keeping its best validation step): the rule `evonas retrain` follows. Test accuracy is read, never used
to pick.
"""

import time

from retrain_length import print_rows, retrain_candidates, save_study, study_parser

from evonas.space import text_classifier_space

RATES = (0.0, 0.5)
SPACE = text_classifier_space(max_blocks=1, ops=("identity", "conv3", "conv5", "gru"), activations=("relu", "gelu"),
                              widths=(64, 128), dropouts=(0.1, 0.3, 0.5), weight_decays=(0.0, 1e-4),
                              final_norms=("layernorm", "none"), head_dropouts=RATES)
BASE = {"num_blocks": 1, "block0_activation": "gelu", "block0_norm": "none", "heads": 2, "ffn_expansion": 1,
        "positional": "none", "weight_decay": 0.0, "optimizer": "adamw", "pooling": "max", "learning_rate": 0.003}
# The winners of real text's --budget 30 searches (experiments/README.md), each as its one non-identity block.
GENOMES = {
    "sst2": [{"block0_op": "gru", "width": 128, "dropout": 0.1, "final_norm": "layernorm"},  # the re-planning run's
             {"block0_op": "conv3", "width": 64, "dropout": 0.3, "final_norm": "none", "weight_decay": 1e-4}],
    "mr": [{"block0_op": "conv5", "block0_activation": "relu", "width": 128, "dropout": 0.1, "final_norm": "layernorm",
            "pooling": "mean", "weight_decay": 1e-4},
           {"block0_op": "identity", "width": 64, "dropout": 0.1, "final_norm": "layernorm", "pooling": "mean"}],
}


def main() -> None:
    parser = study_parser(__doc__, "/tmp/head-dropout", "experiments/results/head_dropout_sst2.json")
    parser.add_argument("--dataset", choices=sorted(GENOMES), default="sst2")
    args = parser.parse_args()
    start = time.perf_counter()
    candidates = [g | {"head_dropout": rate} for g in GENOMES[args.dataset] for rate in RATES]
    results, rows = retrain_candidates(args.run, args.work, args.seeds, SPACE, candidates, BASE)
    print_rows(rows, ("block0_op", "width", "head_dropout"))
    save_study(args, results, rows, start, dataset=args.dataset)

if __name__ == "__main__":
    main()
