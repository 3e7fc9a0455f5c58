"""SST-2 (GLUE, binary sentiment): evolutionary search from scratch, then the best genome retrained with 3 seeds.

Command (from the repository root; ../shared/data holds sst2/train.tsv and sst2/dev.tsv):
    python experiments/text_benchmark.py --config sst2 --out runs/sst2 --results experiments/results/text_sst2.json
    python experiments/text_benchmark.py --config sst2 --smoke --out runs/sst2-smoke   # CI: ~35 s (130 s under load)
or step by step with `evonas` (text_benchmark.py does the same, and writes these commands in its results):
    evonas data import --name sst2 --data-dir runs/sst2/data --format tsv --text-column sentence \
        --label-column label --train ../shared/data/sst2/train.tsv --test ../shared/data/sst2/dev.tsv
    evonas search --config experiments/configs/sst2.py --out runs/sst2/search
    evonas retrain runs/sst2/search --top-k 1 --seeds 3 --steps 2000
`get_config` is the search config, reading the dataset from runs/sst2/data (runs/sst2-smoke/data for `:smoke`,
which the smoke run of text_benchmark.py imports); `get_benchmark` is the import and retrain around it.

Data: train.tsv is train, dev.tsv is test (GLUE's test split has no labels), and validation is carved from train
(10% of each class's whole sentences, `task_seed` 0): 60,778 / 689 / 872 examples, the carved sentences' phrases in
no split. The search's fitness reads validation only; the dev accuracy is read once, by the retrain. The result
below was measured before the carve took whole sentences (60,614 / 6,735 / 872, validation sharing phrases with
train, so ~0.9 where dev was ~0.8).

Expected runtime on a 2-core CPU shared with other work: measured 29 minutes for the search (32 children of 500
steps at batch 64) and 10 minutes for the retrain (3 seeds x 2,000 steps), with the MR run and 3-5 other
processes beside it (load average 4.5 -> 10).
Expected result: dev accuracy 0.829 +- 0.004 (mean +- std over 3 seeds) for the found one-block conv5 model; the
floor is 0.80, and Kim (2014) CNN-rand reports 82.7. See experiments/README.md, "Real text: SST-2 and MR".
"""

from common import is_smoke, search_settings


def get_config(arg: str | None = None) -> dict:
    """The search config; `arg` 'smoke' shrinks it to a CI-sized run."""
    smoke = is_smoke(arg)
    # 500 steps (~0.5 epoch): a 1-block conv reaches validation ~0.87 and dev ~0.79
    return {**search_settings(smoke, num_children=32, steps=500), "dataset": "sst2",
            "data_dir": "runs/sst2-smoke/data" if smoke else "runs/sst2/data"}


def get_benchmark(arg: str | None = None) -> dict:
    """The import and retrain settings of experiments/text_benchmark.py; `arg` 'smoke' shrinks them."""
    smoke = is_smoke(arg)
    return {
        "name": "sst2",
        "import": {
            "file_format": "tsv",
            "files": {"train": ["sst2/train.tsv"], "test": ["sst2/dev.tsv"]},  # under ../shared/data
            "text_columns": ["sentence"],
            "label_column": "label",
        },
        "test_split": "GLUE dev (sst2/dev.tsv); validation carved from train",
        "smoke_lines": 400 if smoke else None,  # smoke: the first lines of every file only
        "retrain": {"top_k": 1, "num_seeds": 3, "steps": 10 if smoke else 2000},  # 2,000 steps: ~2 epochs
    }
