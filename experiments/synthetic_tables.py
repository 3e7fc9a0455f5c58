"""Synthetic tabular benchmarks with known optima, for replaying strategies (`evonas replay`).

    python experiments/synthetic_tables.py --out experiments/tables   # about a second

Each table has 6 genes of 5 choices (15,625 rows, the size of NAS-Bench-201) and one metric, `score`, with a
single maximum at a known genome:
  structured: per-gene effects plus random pairwise interactions (some genes matter more, pairs interact), a
              landscape like a trained-accuracy table; its optimum is found by enumeration.
  smooth:     minus the squared distance to a target genome, with gene values read as ordered; one basin.
  deceptive:  a trap: away from the target the score grows with the distance from it, so hill climbing is led
              away; the target itself scores highest.
Rows are shuffled; a small noise (seeded) breaks ties so the maximum is unique.
"""

import argparse
import csv
import itertools
from pathlib import Path

import numpy as np

NUM_GENES, NUM_CHOICES = 6, 5
KINDS = ("structured", "smooth", "deceptive")


def all_genomes() -> np.ndarray:
    """int32[15625, 6]: every genome of the space."""
    return np.array(list(itertools.product(range(NUM_CHOICES), repeat=NUM_GENES)), np.int32)


def scores(kind: str, genomes: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The score of every genome, and the planted optimum (int32[6])."""
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    target = rng.integers(0, NUM_CHOICES, NUM_GENES)
    distance = np.abs(genomes - target).sum(axis=1)  # 0..24
    if kind == "structured":
        importance = np.geomspace(1.0, 0.1, NUM_GENES)  # gene 0 matters ten times more than gene 5
        effects = rng.normal(0, 1, (NUM_GENES, NUM_CHOICES)) * importance[:, None]
        pairs = rng.normal(0, 0.3, (NUM_GENES, NUM_GENES, NUM_CHOICES, NUM_CHOICES))
        value = effects[np.arange(NUM_GENES), genomes].sum(axis=1)
        for i, j in itertools.combinations(range(NUM_GENES), 2):
            value += pairs[i, j, genomes[:, i], genomes[:, j]]
        value = 0.5 + 0.4 * (value - value.min()) / (value.max() - value.min())  # like accuracies in [0.5, 0.9]
        target = genomes[np.argmax(value)]  # the optimum is where the structure puts it, found by enumeration
        distance = np.abs(genomes - target).sum(axis=1)
    elif kind == "smooth":
        value = 0.9 - 0.002 * ((genomes - target) ** 2).sum(axis=1)
    elif kind == "deceptive":
        value = np.where(distance == 0, 1.0, 0.5 + 0.4 * distance / distance.max())
    else:
        raise ValueError(f"unknown kind {kind!r}; choose from {KINDS}")
    value = value + rng.uniform(0, 1e-4, len(value)) * (distance > 0)  # unique values; the target stays on top
    return value.astype(np.float32), target.astype(np.int32)


def write_table(path: Path, kind: str, seed: int = 0) -> np.ndarray:
    """Writes the `kind` table as CSV (genes g0..g5, metric `score`, rows shuffled); returns its optimum."""
    genomes = all_genomes()
    value, target = scores(kind, genomes, seed)
    order = np.random.default_rng(seed).permutation(len(genomes))
    choices = [f"c{i}" for i in range(NUM_CHOICES)] if kind == "deceptive" else list(range(NUM_CHOICES))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow([f"g{i}" for i in range(NUM_GENES)] + ["score"])
        for row in order:
            writer.writerow([choices[g] for g in genomes[row]] + [f"{value[row]:.7f}"])
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="experiments/tables")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for kind in KINDS:
        target = write_table(Path(args.out) / f"{kind}.csv", kind, args.seed)
        print(f"{kind}: optimum at {target.tolist()} in {Path(args.out) / f'{kind}.csv'}")


if __name__ == "__main__":
    main()
