"""What several test modules share: genomes that cover a space, and loading an experiment script."""

import importlib.util
from pathlib import Path

import jax.numpy as jnp
import numpy as np


def diverse_genomes(space, num, key):
    """Random genomes, with every op, pooling, width, head count, final norm and head dropout forced to appear."""
    genomes = np.array(space.sample(key, num))
    for i, genome in enumerate(genomes):
        genome[space.index("block0_op")] = i % len(space.gene("block0_op").choices)
        for name in ("pooling", "width", "heads", "positional", "ffn_expansion", "block0_norm", "final_norm",
                     "head_dropout"):
            if name not in space.names:
                continue
            genome[space.index(name)] = i % len(space.gene(name).choices)
    return jnp.asarray(genomes)


# The small search of the search, report and monitor tests: the same space, generation size and steps per call, so
# that their programs compile once in the suite's shared cache.
SMALL_SPACE = {"max_blocks": 2, "ops": ("identity", "attention", "conv3"), "widths": (16,), "heads": (1,)}

# The search that the resume and run-directory tests run as `evonas` processes: two choices only where evolution
# needs something to vary, so that its programs compile in seconds, once in the suite's shared cache.
TINY_SPACE = {"max_blocks": 2, "ops": ["identity", "conv3"], "activations": ["relu"], "norms": ["none"], "widths": [16],
              "heads": [1], "ffn_expansions": [1], "dropouts": [0.0], "positionals": ["none"], "poolings": ["mean"],
              "learning_rates": [0.001, 0.01], "weight_decays": [0.0], "optimizers": ["adamw"]}
TINY_SEARCH = {"space": TINY_SPACE, "num_children": 16, "children_per_generation": 2, "population_size": 4,
               "sample_size": 2, "steps": 2, "steps_per_call": 2, "batch_size": 8}  # 8 generations, the last 6 bred

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def load_experiment(name):
    module_spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module
