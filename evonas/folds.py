"""K-fold cross-validation splits for `evonas retrain --folds K`, for datasets without a test split of their own.

The whole labelled data (the task's train, validation and test, in that order) is shuffled once by a seed and cut
into K folds of sizes that differ by at most one. Fold i is the test split once; validation is carved from the
shuffled rest, at the share of validation that the task had in train + validation, and the remainder trains.
"""

import numpy as np

from evonas.data import TextSplit, TextTask
from evonas.errors import InputError


def fold_indices(num_examples: int, num_folds: int, seed: int) -> list[np.ndarray]:
    """The K test folds: disjoint int64 index arrays that cover range(num_examples), from the seed alone.

    Raises:
        InputError: if `num_folds` is below 2 or above `num_examples`.
    """
    if num_folds < 2:
        raise InputError(f"--folds must be at least 2, got {num_folds}")
    if num_folds > num_examples:
        raise InputError(f"--folds {num_folds} asked, but the task has only {num_examples} labelled examples")
    order = np.random.default_rng(seed).permutation(num_examples)
    return [np.sort(fold) for fold in np.array_split(order, num_folds)]


def labelled_data(task: TextTask) -> TextSplit:
    """Every labelled example of the task: train, then validation, then test."""
    splits = (task.train, task.validation, task.test)
    return TextSplit(np.concatenate([s.tokens for s in splits]), np.concatenate([s.labels for s in splits]))


def validation_share(task: TextTask) -> float:
    """The share of validation in the task's train + validation, which each fold's validation keeps."""
    return len(task.validation.labels) / (len(task.train.labels) + len(task.validation.labels))


def fold_splits(data: TextSplit, folds: list[np.ndarray], fold: int, share: float,
                seed: int) -> tuple[TextSplit, TextSplit, TextSplit]:
    """(train, validation, test) of fold `fold`: test is that fold; validation the first `share` of the rest,
    shuffled by `seed` and the fold; train what remains (at least one example each)."""
    rest = np.concatenate([indices for i, indices in enumerate(folds) if i != fold])
    if len(rest) < 2:
        raise InputError(f"--folds {len(folds)} leaves fold {fold} fewer than 2 examples to train and validate on")
    rest = np.random.default_rng([seed, fold]).permutation(rest)
    num_validation = min(max(1, round(share * len(rest))), len(rest) - 1)
    parts = (rest[num_validation:], rest[:num_validation], folds[fold])
    return tuple(TextSplit(data.tokens[np.sort(p)], data.labels[np.sort(p)]) for p in parts)
