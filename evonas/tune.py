"""Tuning the winner's training genes for `evonas retrain --tune N`: a small search with the architecture fixed.

A setting is a choice of the space's `learning_rate` and `weight_decay` genes; a candidate is a genome with only
those genes changed, so the N candidates of each genome train side by side as members of one population (one
compiled program, as in the search). The number of steps is tuned as retrain tunes it: each member keeps the
parameters of its best validation step. Validation alone picks; the tuning never sees the test split.
"""

import itertools

import numpy as np

from evonas.errors import InputError
from evonas.space import SearchSpace

TRAINING_GENES = ("learning_rate", "weight_decay")
TUNING_SEED = 1_000_003  # the tuning's init and batch keys: none of retrain's seeds 0..N-1


def settings(space: SearchSpace, genome, num: int) -> np.ndarray:
    """int32[num, num_genes]: the genome's own setting first, then the nearest others in the grid of the training
    genes' choices (fewest index steps away, ties in grid order).

    Raises:
        InputError: if `num` is below 2 or above the number of settings the space holds.
    """
    genes = [name for name in TRAINING_GENES if name in space.names]
    grid = list(itertools.product(*(range(len(space.gene(name).choices)) for name in genes)))
    if num < 2:
        raise InputError(f"--tune must be at least 2 (the winner's own setting and another), got {num}")
    if num > len(grid):
        raise InputError(f"--tune {num} asked, but the space has only {len(grid)} settings of "
                         f"{' x '.join(genes) or 'training genes'}")
    positions = [space.index(name) for name in genes]
    own = tuple(int(genome[p]) for p in positions)
    grid.sort(key=lambda point: sum(abs(a - b) for a, b in zip(point, own)))  # stable: grid order breaks ties
    candidates = np.repeat(np.asarray(genome, np.int32)[None], num, axis=0)
    candidates[:, positions] = np.asarray(grid[:num], np.int32).reshape(num, len(positions))
    return candidates


def describe(space: SearchSpace, genome) -> dict[str, float]:
    """The training genes' values in a genome, by name."""
    decoded = space.decode(genome)
    return {name: decoded[name] for name in TRAINING_GENES if name in decoded}


def best_setting(validation: np.ndarray, diverged: np.ndarray) -> int:
    """The setting of the best validation accuracy; a diverged one counts as the worst; ties keep the first
    (the genome's own setting, then the nearest)."""
    return int(np.where(diverged, -np.inf, validation).argmax())
