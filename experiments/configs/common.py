"""Settings the text benchmarks share: the search space for short sentences and the search's shape."""

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
