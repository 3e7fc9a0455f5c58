"""Settings the configs share: the `smoke` switch, the search space for short sentences, the search's shape."""

# The default `evonas search` on the built-in ListOps task, written out (tests check it equals SearchConfig's defaults).
LISTOPS_SEARCH = {
    "strategy": "evolution",
    "population_size": 16,
    "sample_size": 4,
    "num_children": 96,
    "children_per_generation": 8,
    "steps": 150,
    "steps_per_call": 25,
    "batch_size": 32,
    "mutation_rate": 0.1,
    "crossover_rate": 0.5,
    "task": "listops",
    "listops": {"max_depth": 2, "max_args": 2, "max_length": 12},
    "space": {"widths": [32, 64], "max_blocks": 3},
}

# A few seconds: 2 generations of 2 children, 2 steps each, over a space of one block and two ops on 64 examples.
LISTOPS_SMOKE = {
    "population_size": 2,
    "sample_size": 2,
    "num_children": 4,
    "children_per_generation": 2,
    "steps": 2,
    "steps_per_call": 2,
    "batch_size": 8,
    "listops": {"num_train": 64, "num_validation": 16, "num_test": 16, "max_depth": 2, "max_args": 2,
                "max_length": 12},
    "space": {"max_blocks": 1, "ops": ["identity", "conv3"], "widths": [16], "heads": [1]},
}

SENTENCE_SPACE = {  # for short sentences: convs, gated MLPs, attention, a GRU; widths 64-128; 1-3 blocks
    "max_blocks": 3,
    "ops": ["conv3", "conv5", "gated_mlp", "attention", "gru"],
    "activations": ["relu", "gelu"],
    "norms": ["layernorm", "none"],
    "widths": [64, 128],
    "heads": [2, 4],
    "ffn_expansions": [1, 2],
    "dropouts": [0.1, 0.3],
    "positionals": ["learned", "none"],
    "poolings": ["mean", "max"],
    "learning_rates": [1e-3, 3e-3],
    "weight_decays": [0.0, 1e-4],
    "optimizers": ["adamw"],
}

SMOKE_SPACE = {"max_blocks": 1, "ops": ["conv3", "gated_mlp"], "widths": [16], "heads": [1], "ffn_expansions": [1],
               "dropouts": [0.0], "positionals": ["none"], "poolings": ["max"], "learning_rates": [3e-3],
               "weight_decays": [0.0], "optimizers": ["adamw"]}


def is_smoke(arg: str | None) -> bool:
    """get_config's switch: no argument is the full run, `smoke` (FILE.py:smoke) the CI run; anything else is an error."""
    if arg not in (None, "smoke"):
        raise ValueError(f"unknown config argument {arg!r}; give none (the full run) or 'smoke'")
    return arg == "smoke"


def search_settings(smoke: bool, num_children: int, steps: int) -> dict:
    """SearchConfig fields: generations of 8 children from a population of 8, batch 64; smoke: one of 4, tiny."""
    return {
        "seed": 0,
        "population_size": 4 if smoke else 8,
        "sample_size": 2 if smoke else 3,
        "num_children": 4 if smoke else num_children,
        "children_per_generation": 4 if smoke else 8,
        "steps": 10 if smoke else steps,
        "steps_per_call": 10 if smoke else 100,
        "batch_size": 16 if smoke else 64,
        "lowercase": True,
        "space": SMOKE_SPACE if smoke else SENTENCE_SPACE,
    }
