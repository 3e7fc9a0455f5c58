"""Tabular objectives: a CSV file of genome -> metrics, the way tabular NAS benchmarks are published.

Each gene column's distinct values become that gene's choices (numbers in numeric order, other text in
alphabetical order), so the search space is built from the table itself. Looking a genome up is one gather,
so a table is a jittable objective: `table.lookup(metric)` maps int32[N, G] to float32[N].
"""

import csv
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from evonas.space import Gene, SearchSpace

DENSE_LIMIT = 2**24  # spaces up to this size are looked up in a dense array (64 MiB); larger ones by binary search


class TableError(ValueError):
    """A table that cannot be used; the message names the file, and the line or column at fault."""


def _typed(text: str) -> int | float | str:
    """A cell as the number it spells, else as text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _choices(values: Sequence[str]) -> tuple:
    """A column's distinct values in order: numeric if every one is a number, else as text."""
    typed = {_typed(value) for value in values}
    if all(isinstance(value, int | float) for value in typed):
        return tuple(sorted(typed))
    return tuple(sorted(set(values)))


@dataclasses.dataclass(frozen=True)
class Table:
    """A search space built from a table's gene columns, and every row's genome and metrics."""

    path: str
    space: SearchSpace
    genomes: np.ndarray  # int32[rows, num_genes]
    metrics: dict[str, np.ndarray]  # column -> float32[rows]

    @property
    def codes(self) -> np.ndarray:
        """int64[rows]: each row's genome as one mixed-radix number."""
        return encode(self.space, self.genomes)

    def column(self, metric: str) -> np.ndarray:
        if metric not in self.metrics:
            raise TableError(f"{self.path}: no metric column {metric!r}; metric columns are {sorted(self.metrics)}")
        return self.metrics[metric]

    def lookup(self, metric: str):
        """A jittable `fn(genomes int32[N, G]) -> (float32[N], found bool[N])`; a genome not in the table is NaN
        and not found."""
        values = self.column(metric)
        codes = self.codes
        if self.space.size <= DENSE_LIMIT:
            dense = np.full(self.space.size + 1, np.nan, np.float32)  # the last entry answers genomes not in the table
            dense[codes] = values
            present = np.zeros(self.space.size + 1, bool)
            present[codes] = True
            dense, present = jnp.asarray(dense), jnp.asarray(present)

            def lookup_dense(genomes):
                index = encode_jax(self.space, genomes)
                return dense[index], present[index]

            return lookup_dense
        if self.space.size >= 2**31:
            raise TableError(f"{self.path}: the space of the gene columns has {self.space.size:,} genomes; "
                             f"at most 2**31 - 1 can be looked up")
        order = np.argsort(codes)
        sorted_codes, sorted_values = jnp.asarray(codes[order], jnp.int32), jnp.asarray(values[order])

        def lookup_sorted(genomes):
            index = encode_jax(self.space, genomes)
            position = jnp.clip(jnp.searchsorted(sorted_codes, index), 0, len(codes) - 1)
            found = sorted_codes[position] == index
            return jnp.where(found, sorted_values[position], jnp.nan), found

        return lookup_sorted

    def evaluate(self, metric: str, genomes) -> np.ndarray:
        """The metric of each genome int32[N, G] on the host; a genome not in the table is a TableError."""
        genomes = np.asarray(genomes, np.int32).reshape(-1, self.space.num_genes)
        values, found = self.lookup(metric)(jnp.asarray(genomes))
        if not np.all(found):
            missing = genomes[int(np.argmin(np.asarray(found)))]
            raise TableError(f"{self.path}: genome {missing.tolist()} ({self.space.decode(missing)}) is not in the table")
        return np.asarray(values)


def _radix(space: SearchSpace) -> np.ndarray:
    """Place value of each gene in the mixed-radix code of a genome (the last gene varies fastest)."""
    return np.array([math.prod(space.num_choices[i + 1:].tolist()) for i in range(space.num_genes)], np.int64)


def encode(space: SearchSpace, genomes: np.ndarray) -> np.ndarray:
    return np.asarray(genomes, np.int64) @ _radix(space)


def encode_jax(space: SearchSpace, genomes: jax.Array) -> jax.Array:
    """int32[N]: the mixed-radix code of each genome int32[N, G] (spaces under 2**31 genomes)."""
    return jnp.sum(genomes * jnp.asarray(_radix(space), jnp.int32)[None], axis=1)


def load_table(path: str | Path, metrics: Sequence[str], genes: Sequence[str] | None = None) -> Table:
    """Reads a CSV file with a header line.

    Args:
      path: the CSV file.
      metrics: columns read as float metrics.
      genes: gene columns, in genome order; None takes every column that is not a metric.

    Raises:
      TableError: naming the file and what is wrong: a missing column, a metric cell that is not a number, a
        genome that appears twice. A gene column with one value is a gene with one choice.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            rows = list(csv.reader(stream))
    except (OSError, UnicodeDecodeError) as error:
        raise TableError(f"{path}: cannot read it as a UTF-8 CSV file ({error})") from None
    if len(rows) < 2:
        raise TableError(f"{path}: expected a header line and at least one row, got {len(rows)} lines")
    header, rows = [name.strip() for name in rows[0]], rows[1:]
    for name in list(metrics) + list(genes or []):
        if name not in header:
            raise TableError(f"{path}: no column {name!r}; columns are {header}")
    genes = [name for name in header if name not in metrics] if genes is None else list(genes)
    if overlap := set(genes) & set(metrics):
        raise TableError(f"{path}: columns {sorted(overlap)} cannot be both genes and metrics")
    if not genes:
        raise TableError(f"{path}: no gene columns; columns are {header}")
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise TableError(f"{path}: line {number} has {len(row)} cells, the header has {len(header)}")
    columns = {name: [row[i].strip() for row in rows] for i, name in enumerate(header)}
    space = SearchSpace(tuple(Gene(name, _choices(columns[name])) for name in genes))
    genomes = np.empty((len(rows), len(genes)), np.int32)
    for g, gene in enumerate(space.genes):
        numeric = not isinstance(gene.choices[0], str)
        position = {choice: i for i, choice in enumerate(gene.choices)}
        genomes[:, g] = [position[_typed(cell) if numeric else cell] for cell in columns[gene.name]]
    values = {}
    for name in metrics:
        try:
            values[name] = np.array([float(cell) for cell in columns[name]], np.float32)
        except ValueError:
            bad = next(r for r, cell in enumerate(columns[name]) if not _is_float(cell))
            raise TableError(f"{path}: line {bad + 2}, column {name!r}: {columns[name][bad]!r} is not a number") from None
    table = Table(str(path), space, genomes, values)
    codes = table.codes
    unique, first = np.unique(codes, return_index=True)
    if len(unique) != len(codes):
        repeated = np.setdiff1d(np.arange(len(codes)), first)[0]
        original = int(np.flatnonzero(codes == codes[repeated])[0])
        raise TableError(f"{path}: line {repeated + 2} repeats the genes of line {original + 2}")
    return table


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
