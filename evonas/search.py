"""The search loop: ask the strategy for children, train and score them as one population, tell."""

import dataclasses
import inspect
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from evonas import data as data_lib
from evonas import strategies
from evonas.checkpoint import Checkpoints, Progress, ResumeError
from evonas.member import TrainConfig
from evonas.models import Architecture, count_params, forward_flops
from evonas.population import Population
from evonas.sharding import memory_budget_bytes
from evonas.space import SearchSpace, text_classifier_space
from evonas.strategies import STRATEGIES
from evonas.supernet import PopulationModel


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Everything a run depends on; `config.json` holds it, so a run can be repeated exactly."""

    seed: int = 0
    strategy: str = "evolution"
    # Many short-trained children beat a few long-trained ones: evolution needs generations to select over
    # (experiments/README.md, "Evolution against random search"). About a minute on a quiet 2-core CPU.
    population_size: int = 16
    sample_size: int = 4
    num_children: int = 96
    children_per_generation: int = 8
    steps: int = 150  # training steps per child
    mutation_rate: float = 0.1
    crossover_rate: float = 0.5
    batch_size: int = 32
    steps_per_call: int = 25
    # "member": members one after another (CPUs); "grouped": side by side, grouped by the op each block runs
    # (GPUs, TPUs); "auto": by the devices' platform.
    population_form: str = "auto"
    compute_dtype: str = "float32"  # or "bfloat16" on GPUs and TPUs; weights, loss and optimizer stay float32
    memory_budget_gb: float | None = None  # for the members trained at once; None: half the RAM or device memory
    task: str = "listops"
    task_seed: int = 0  # the data stays the same across search seeds
    # Keyword arguments of data.listops_task. Depth 2 with 2 arguments (at most 10 tokens) is learnable in
    # 150 steps, yet order matters (experiments/README.md: order-blind models reach .43, attention or recurrence .59).
    listops: dict[str, Any] = dataclasses.field(default_factory=lambda: {"max_depth": 2, "max_args": 2, "max_length": 12})
    # A prepared TFDS text-classification dataset (catalog or `evonas data import`), used instead of `task`.
    dataset: str | None = None
    data_dir: str | None = None  # None: tensorflow-datasets' default (~/tensorflow_datasets or $TFDS_DATA_DIR)
    text_feature: str | None = None  # None: found from the dataset's metadata
    label_feature: str | None = None
    tokenizer: str = "word"  # "word": vocabulary from train; "byte": UTF-8 bytes
    vocab_size: int = 20_000  # word ids at most, <pad> and <unk> included
    min_frequency: int = 2  # rarer training words become <unk>
    max_length: int | None = None  # None: long enough for length_percentile % of training texts
    length_percentile: float = 99.0
    lowercase: bool = False
    # Keyword overrides of text_classifier_space. The default narrows width and depth so that the
    # default search compiles and trains on a 2-core CPU in minutes; `{}` searches the whole space.
    space: dict[str, Any] = dataclasses.field(default_factory=lambda: {"widths": [32, 64], "max_blocks": 3})

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose from {sorted(STRATEGIES)}")
        if self.num_children % self.children_per_generation:
            raise ValueError(
                f"children ({self.num_children}) must be a multiple of children per generation "
                f"({self.children_per_generation})"
            )
        space_options = set(inspect.signature(text_classifier_space).parameters)
        if unknown := set(self.space) - space_options:
            raise ValueError(f"unknown space options {sorted(unknown)}; known are {sorted(space_options)}")
        listops_options = set(inspect.signature(data_lib.listops_task).parameters) - {"seed"}  # task_seed sets it
        if unknown := set(self.listops) - listops_options:
            raise ValueError(f"unknown listops options {sorted(unknown)}; known are {sorted(listops_options)}")
        if self.memory_budget_gb is not None and self.memory_budget_gb <= 0:
            raise ValueError(f"memory_budget_gb must be positive, got {self.memory_budget_gb}")
        for name in ("population_size", "sample_size", "num_children", "children_per_generation", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        self.train_config()  # its own checks, e.g. compute_dtype

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SearchConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := set(values) - known:
            raise ValueError(f"unknown config keys {sorted(unknown)}; known keys are {sorted(known)}")
        return cls(**values)

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            batch_size=self.batch_size,
            steps_per_call=math.gcd(self.steps, self.steps_per_call),
            form=self.population_form,
            compute_dtype=self.compute_dtype,
        )


def load_task(config: SearchConfig) -> data_lib.TextTask:
    if config.dataset is not None:
        from evonas.datasets import load_text_task  # tensorflow-datasets loads only when a dataset is asked for

        return load_text_task(
            config.dataset, config.data_dir, text_feature=config.text_feature, label_feature=config.label_feature,
            tokenizer=config.tokenizer, vocab_size=config.vocab_size, min_frequency=config.min_frequency,
            max_length=config.max_length, length_percentile=config.length_percentile, lowercase=config.lowercase,
            seed=config.task_seed,
        )
    if config.task == "listops":
        return data_lib.listops_task(seed=config.task_seed, **config.listops)
    raise ValueError(f"unknown task {config.task!r}; the built-in task is 'listops'")


def make_strategy(config: SearchConfig, space: SearchSpace):
    return strategies.make(config.strategy, space, population_size=config.population_size,
                           num_children_per_generation=config.children_per_generation,
                           sample_size=config.sample_size, mutation_rate=config.mutation_rate,
                           crossover_rate=config.crossover_rate)


CHECKPOINTS = "checkpoints"  # the run directory's subdirectory of per-generation checkpoints


def load_run_config(run_dir: str | Path) -> SearchConfig:
    """The config a run directory was started with, from its config.json."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ResumeError(f"{path} does not exist; is {run_dir} a run directory of `evonas search`?")
    return saved_config(json.loads(path.read_text())["config"], path)


def saved_config(values: dict[str, Any], path: Path) -> SearchConfig:
    """The config a run saved in `path`. It must name every field: one it lacks was added to evonas after the
    run, and today's default for it (e.g. the task's size) need not be what the run used."""
    if missing := sorted({field.name for field in dataclasses.fields(SearchConfig)} - set(values)):
        raise ResumeError(f"{path} has no {', '.join(missing)}: it was written by an older evonas, whose defaults "
                          f"may differ from today's; add the values that run used")
    return SearchConfig.from_dict(values)


def config_conflicts(config: SearchConfig, values: dict[str, Any]) -> list[str]:
    """The fields of `values` that differ from `config`, compared as JSON (where a tuple equals a list)."""
    saved = json.loads(json.dumps(dataclasses.asdict(config)))
    return [f"{name}={value!r} (the run has {saved.get(name)!r})" for name, value in values.items()
            if json.loads(json.dumps(value)) != saved.get(name)]


def read_history(path: Path, num_bytes: int, num_records: int) -> list[dict[str, Any]]:
    """The records in the first `num_bytes` of history.jsonl, which a checkpoint says hold `num_records` lines."""
    kept = path.read_bytes()[:num_bytes]
    if len(kept) != num_bytes or kept.count(b"\n") != num_records or not kept.endswith(b"\n") and kept:
        raise ResumeError(f"{path} does not match its checkpoint, which expects {num_records} lines in its first "
                          f"{num_bytes} bytes; the run directory is damaged")
    return [json.loads(line) for line in kept.splitlines()]


def run_search(config: SearchConfig, out_dir: str | Path, progress: bool = True, resume: bool = False) -> dict[str, Any]:
    """Runs a whole search, writing `config.json`, `history.jsonl`, `checkpoints/` and `summary.json` to `out_dir`.

    With `resume`, continues the run in `out_dir` from its newest usable checkpoint instead (`config` must
    be the one in its config.json); the history and summary are those of a run that never stopped.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    space = text_classifier_space(**config.space)
    if resume and (conflicts := config_conflicts(load_run_config(out), dataclasses.asdict(config))):
        raise ResumeError(f"{out} was started with another config: {', '.join(conflicts)}")
    task = load_task(config)
    if not resume:
        (out / "config.json").write_text(json.dumps(
            {"config": dataclasses.asdict(config), "space": space.to_json()}, indent=2))
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # a previous run's, which this one replaces
        (out / "summary.json").unlink(missing_ok=True)  # so that summary.json always means "finished"
    data_lib.write_task_files(task, out)

    model = PopulationModel(space, task.vocab_size, task.max_length, task.num_classes)
    population = Population(model, config.train_config())
    strategy = make_strategy(config, space)
    train, validation = population.put_split(task.train), population.put_split(task.validation)
    budget = memory_budget_bytes() if config.memory_budget_gb is None else int(config.memory_budget_gb * 2**30)
    chunk_size = population.chunk_size(budget)
    key = jax.random.key(config.seed)
    num_generations = config.num_children // config.children_per_generation
    with Checkpoints(out / CHECKPOINTS) as checkpoints, open(out / "history.jsonl", "ab") as log, \
            tqdm(total=config.num_children, disable=not progress, desc=f"{config.strategy} search", unit="child") as bar:
        earlier = Progress(strategy.init(), history_bytes=0, wall_seconds=0.0, compilations=0)
        if resume:
            earlier = checkpoints.restore_latest(earlier)
        else:
            checkpoints.save(earlier)  # so that a kill during the first generation can resume too
        history = read_history(out / "history.jsonl", earlier.history_bytes, int(earlier.strategy.next_id))
        log.truncate(earlier.history_bytes)  # drops the lines of a generation that no checkpoint covers
        bar.update(len(history))
        state = earlier.strategy
        for generation in range(int(state.generation), num_generations):
            key_ask, key_init, key_train = jax.random.split(jax.random.fold_in(key, generation), 3)
            children, parents = strategy.ask(key_ask, state)
            fitted = population.fit(
                jax.random.split(key_init, config.children_per_generation), np.asarray(children), train,
                {"validation": validation}, key_train, config.steps, chunk_size)
            accuracy, val_loss, losses = fitted["validation_accuracy"], fitted["validation_loss"], fitted["losses"]
            diverged = ~np.isfinite(losses).all(axis=1) | ~np.isfinite(val_loss)
            fitness = np.where(diverged, -np.inf, accuracy)
            first_id = int(state.next_id)
            state = strategy.tell(state, children, jnp.asarray(fitness, jnp.float32))
            for j, genome in enumerate(np.asarray(children)):
                record = child_record(space, model, task, genome, first_id + j, generation, np.asarray(parents[j]),
                                      fitness[j], float(accuracy[j]), float(val_loss[j]), losses[j], bool(diverged[j]))
                history.append(record)
                log.write((json.dumps(record) + "\n").encode())
            log.flush()
            os.fsync(log.fileno())  # the checkpoint below points into these bytes, so they must be on disk first
            checkpoints.save(Progress(state, history_bytes=os.fstat(log.fileno()).st_size,
                                      wall_seconds=earlier.wall_seconds + time.perf_counter() - start,
                                      compilations=earlier.compilations + population.traces))
            best = max((r for r in history if not r["diverged"]), key=lambda r: r["fitness"], default=None)
            bar.update(config.children_per_generation)
            if best is not None:
                bar.set_postfix(best_val_accuracy=f"{best['val_accuracy']:.3f}")

    summary = summarize(space, history, config, earlier.compilations + population.traces,
                        earlier.wall_seconds + time.perf_counter() - start)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def child_record(space, model, task, genome, child_id, generation, parents, fitness, accuracy, val_loss, losses, diverged):
    arch = Architecture.from_genome(space, genome)
    return {
        "id": child_id,
        "generation": generation,
        "genome": [int(g) for g in genome],
        "parents": [int(p) for p in parents if p >= 0],
        "fitness": None if diverged else float(fitness),
        "val_accuracy": None if diverged else accuracy,
        "val_loss": None if diverged else val_loss,
        "train_loss": None if diverged else float(losses[-1]),
        "params": count_params(model.standalone_shapes(arch)),
        "flops": forward_flops(arch, task.max_length, task.num_classes),
        "diverged": diverged,
    }


def summarize(space: SearchSpace, history, config: SearchConfig, compilations: int, wall_seconds: float):
    """The best child, and enough context to judge it: first-generation median, count, cost."""
    finite = [r for r in history if not r["diverged"]]
    best = max(finite, key=lambda r: r["fitness"]) if finite else None
    first = [r["fitness"] for r in history if r["generation"] == 0 and not r["diverged"]]
    return {
        "best_id": best and best["id"],
        "best_genome": best and best["genome"],
        "best_architecture": best and Architecture.from_genome(space, best["genome"]).to_dict(),
        "best_val_accuracy": best and best["val_accuracy"],
        "best_params": best and best["params"],
        "first_generation_median_val_accuracy": float(np.median(first)) if first else None,
        "children": len(history),
        "diverged": len(history) - len(finite),
        "generations": config.num_children // config.children_per_generation,
        "strategy": config.strategy,
        "seed": config.seed,
        "wall_seconds": float(wall_seconds),
        "compilations": int(compilations),
    }
