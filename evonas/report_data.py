"""What `evonas report` computes from a run directory: curves, the living population, the Pareto front, gene importance.

Pure numpy (and scikit-learn for the importance model), so that each quantity is tested apart from its figure.
"""

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from evonas.errors import InputError
from evonas.fitness import is_candidate
from evonas.monitor import GENERATIONS, best_child
from evonas.space import SearchSpace


class ReportError(InputError):
    """A directory that is not a readable search run; the message names the file at fault."""


@dataclasses.dataclass(frozen=True)
class RunData:
    """What a report shows of one run directory."""

    path: Path
    config: dict[str, Any]  # SearchConfig's fields as config.json holds them
    space: SearchSpace
    history: list[dict[str, Any]]  # one record per child, in birth order
    summary: dict[str, Any] | None  # None: the search has not finished
    generations: list[dict[str, Any]] | None  # per-generation seconds; None: a run made before they were written
    retrain: dict[str, Any] | None  # retrain/results.json; None: not retrained

    @property
    def name(self) -> str:
        return f"{self.path.name} ({self.config.get('strategy', '?')}, seed {self.config.get('seed', '?')})"


def load_report_run(run_dir: str | Path) -> RunData:
    """Reads what a report needs of a run directory.

    Raises:
        ReportError: if the directory is missing, lacks config.json or history.jsonl, or they are not valid.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise ReportError(f"{path} is not a directory (give a run directory written by `evonas search --out DIR`)")
    if missing := [name for name in ("config.json", "history.jsonl") if not (path / name).is_file()]:
        raise ReportError(f"{path} is not a search run directory: it has no {' or '.join(missing)}")
    try:
        saved = json.loads((path / "config.json").read_text())
        config, space = saved["config"], SearchSpace.from_json(saved["space"])
        history = _jsonl(path / "history.jsonl")
        generations = _jsonl(path / GENERATIONS) if (path / GENERATIONS).is_file() else None
        summary, retrain = (json.loads(p.read_text()) if p.is_file() else None
                            for p in (path / "summary.json", path / "retrain" / "results.json"))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ReportError(f"{path}: a file of the run is not what `evonas search` writes: {error}") from None
    if not history:
        raise ReportError(f"{path / 'history.jsonl'} holds no child yet; report once a generation is done")
    return RunData(path, config, space, history, summary, generations, retrain)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def best_so_far(history: list[dict[str, Any]]) -> np.ndarray:
    """float[children]: after each child, the validation accuracy of the fittest child so far (NaN before any)."""
    curve, best = [], None
    for record in history:
        if is_candidate(record) and (best is None or record["fitness"] > best["fitness"]):
            best = record
        curve.append(np.nan if best is None else best["val_accuracy"])
    return np.asarray(curve, float)


def child_seconds(run: RunData) -> np.ndarray | None:
    """float[children]: the run's wall seconds when each child's generation was done; None if not recorded."""
    if not run.generations:
        return None
    done = {r["generation"]: r["wall_seconds"] for r in run.generations}
    return np.asarray([done.get(r["generation"], np.nan) for r in run.history], float)


def fitness_array(history: list[dict[str, Any]]) -> np.ndarray:
    """float[children]: each child's fitness, NaN where it diverged."""
    return np.asarray([r["fitness"] if is_candidate(r) else np.nan for r in history], float)


def gene_frequencies(space: SearchSpace, history: list[dict[str, Any]], population_size: int) -> list[np.ndarray]:
    """Per gene, float[children, num_choices]: the share of each choice in the living population (the last
    `population_size` children) after each birth."""
    genomes = np.asarray([r["genome"] for r in history], int)
    result = []
    for g, gene in enumerate(space.genes):
        counts = np.cumsum(np.eye(len(gene.choices))[genomes[:, g]], axis=0)  # [children, choices], births so far
        gone = np.vstack([np.zeros((population_size, len(gene.choices))), counts[:-population_size]])[:len(history)]
        living = counts - gone
        result.append(living / living.sum(axis=1, keepdims=True))
    return result


def pareto_front(params: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats (fewer or equal params and higher or equal accuracy, one strictly),
    by increasing params; NaN accuracies are never on the front."""
    order = sorted((i for i in range(len(params)) if np.isfinite(accuracy[i])), key=lambda i: (params[i], -accuracy[i]))
    front, best = [], -np.inf
    for i in order:
        if accuracy[i] > best:
            front.append(i)
            best = accuracy[i]
    return np.asarray(front, int)


@dataclasses.dataclass(frozen=True)
class Importance:
    """Permutation importance of each gene for a random forest that predicts fitness from the genome."""

    names: tuple[str, ...]
    mean: np.ndarray  # float[num_genes]: mean drop of held-out R² when the gene's column is shuffled
    std: np.ndarray  # float[num_genes]: its spread over folds and shuffles
    held_out_r2: float  # how well the forest predicts unseen children: low means the importances say little


MIN_CHILDREN_FOR_IMPORTANCE = 8


def gene_importance(space: SearchSpace, history: list[dict[str, Any]], folds: int = 4, repeats: int = 3,
                    seed: int = 0) -> Importance | None:
    """Each gene's permutation importance, measured on held-out children of `folds`-fold cross-validation.

    Returns None with fewer than `MIN_CHILDREN_FOR_IMPORTANCE` children that did not diverge.
    """
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold

    finite = [r for r in history if is_candidate(r)]
    if len(finite) < MIN_CHILDREN_FOR_IMPORTANCE:
        return None
    x = np.asarray([r["genome"] for r in finite], float)
    y = np.asarray([r["fitness"] for r in finite], float)
    drops, predicted = [], np.empty_like(y)
    for train, test in KFold(min(folds, len(y) // 2), shuffle=True, random_state=seed).split(x):
        forest = RandomForestRegressor(n_estimators=50, min_samples_leaf=2, random_state=seed).fit(x[train], y[train])
        predicted[test] = forest.predict(x[test])
        drops.append(permutation_importance(forest, x[test], y[test], n_repeats=repeats, random_state=seed,
                                            scoring="r2").importances)
    drops = np.concatenate(drops, axis=1)  # [num_genes, folds * repeats]
    return Importance(space.names, drops.mean(axis=1), drops.std(axis=1), float(r2_score(y, predicted)))


def fitness_by_choice(space: SearchSpace, history: list[dict[str, Any]], gene: str) -> dict[str, np.ndarray]:
    """The fitness of the children (not diverged) that chose each option of `gene`, by the option's label."""
    g = space.index(gene)
    return {str(choice): np.asarray([r["fitness"] for r in history if is_candidate(r) and r["genome"][g] == c])
            for c, choice in enumerate(space.genes[g].choices)}


def describe_genome(space: SearchSpace, genome: list[int]) -> str:
    """A compact architecture: its blocks (op, activation, norm) in order, then the other genes' choices."""
    choice = space.decode(genome)
    block_gene = re.compile(r"block(\d+)_(\w+)")
    blocks, others = {}, []
    for name, value in choice.items():
        if match := block_gene.fullmatch(name):
            blocks.setdefault(int(match[1]), []).append(str(value))
        elif name != "num_blocks":
            others.append(f"{name}={value}")
    used = [" ".join(blocks[i]) for i in sorted(blocks)][:choice.get("num_blocks", len(blocks))]
    return " → ".join(f"[{block}]" for block in used) + (" | " if used else "") + ", ".join(others)


def top_children(run: RunData, k: int = 10) -> list[dict[str, Any]]:
    """The k distinct genomes of highest fitness (each its best record), with the test accuracy of retrain where
    it retrained that genome (mean and std over seeds), else None."""
    retrained = {tuple(g.get("search_genome", g["genome"])): g for g in (run.retrain or {}).get("genomes", [])}
    distinct: dict[tuple[int, ...], dict[str, Any]] = {}
    for record in sorted((r for r in run.history if is_candidate(r)), key=lambda r: -r["fitness"]):
        distinct.setdefault(tuple(record["genome"]), record)
    rows = []
    for genome, record in list(distinct.items())[:k]:
        test = retrained.get(genome)
        rows.append({**record, "architecture": describe_genome(run.space, record["genome"]),
                     "test_accuracy": test and (test["test_accuracy_mean"], test["test_accuracy_std"])})
    return rows


def run_facts(run: RunData) -> dict[str, Any]:
    """The run's cost and outcome: children, diverged, compilations and seconds (from summary.json, or from the
    last generation recorded while the search runs)."""
    best = best_child(run.history)
    last = (run.generations or [{}])[-1]
    source = run.summary or {"wall_seconds": last.get("wall_seconds"), "compilations": last.get("compilations")}
    return {"children": len(run.history), "diverged": sum(r["diverged"] for r in run.history),
            "finished": run.summary is not None, "best_id": best and best["id"],
            "best_val_accuracy": best and best["val_accuracy"], "wall_seconds": source.get("wall_seconds"),
            "compilations": source.get("compilations"),
            "retrain_test_accuracy": run.retrain and run.retrain.get("test_accuracy_mean")}
