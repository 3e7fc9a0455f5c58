"""What several test modules share: genomes that cover a space, and loading an experiment script."""

import importlib.util
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from evonas.ops import OPS


def diverse_genomes(space, num, key):
    """Random genomes, with every op, pooling, width and head count forced to appear."""
    genomes = np.array(space.sample(key, num))
    for i, genome in enumerate(genomes):
        genome[space.index("block0_op")] = i % len(OPS)
        for name in ("pooling", "width", "heads", "positional", "ffn_expansion", "block0_norm"):
            genome[space.index(name)] = i % len(space.gene(name).choices)
    return jnp.asarray(genomes)


EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def load_experiment(name):
    module_spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module
