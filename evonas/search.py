"""The search loop: ask the strategy for children, train and score them as one population, tell."""

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from evonas import budget as budget_lib
from evonas import data as data_lib
from evonas import fitness, interrupts, predictor, run_dir, strategies
from evonas import inherit as inherit_lib
from evonas.checkpoint import Checkpoints, Progress, ResumeError
from evonas.costs import child_costs
from evonas.errors import ConfigError
from evonas.models import Architecture
from evonas.monitor import GenerationMonitor
from evonas.options import SearchConfig
from evonas.population import Population
from evonas.sharding import memory_budget_bytes
from evonas.space import SearchSpace
from evonas.supernet import PopulationModel

__all__ = ["SearchConfig", "load_task", "run_search"]  # SearchConfig is declared, option by option, in evonas.options


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
    raise ConfigError(f"unknown task {config.task!r}; the built-in task is 'listops'")


def make_strategy(config: SearchConfig, space: SearchSpace):
    return strategies.make(config.strategy, space, population_size=config.population_size,
                           num_children_per_generation=config.children_per_generation,
                           sample_size=config.sample_size, mutation_rate=config.mutation_rate,
                           crossover_rate=config.crossover_rate,
                           num_objectives=config.make_objective().num_objectives)


clock = time.perf_counter  # the wall clock of --budget and of wall_seconds; tests replace it
CHECKPOINTS = run_dir.CHECKPOINTS  # the run directory's subdirectory of per-generation checkpoints


def load_run_config(run_dir: str | Path) -> SearchConfig:
    """The config a run directory was started with, from its config.json."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ResumeError(f"{path} does not exist; is {run_dir} a run directory of `evonas search`?")
    try:
        return saved_config(json.loads(path.read_text())["config"], path)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise ResumeError(f"{path} is not the config.json of an `evonas search` run (not JSON, or no 'config')") from None


def saved_config(values: dict[str, Any], path: Path) -> SearchConfig:
    """The config a run saved in `path`. It must name every field: one it lacks was added to evonas after the
    run, and today's default for it (e.g. the task's size) need not be what the run used."""
    if not isinstance(values, dict):
        raise ResumeError(f"{path}: its 'config' must be a JSON object of config keys")
    if missing := sorted({field.name for field in dataclasses.fields(SearchConfig)} - set(values)):
        raise ResumeError(f"{path} has no {', '.join(missing)}: it was written by an older evonas, whose defaults "
                          f"may differ from today's; add the values that run used")
    return SearchConfig.from_dict(values, source=str(path))


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


def run_search(config: SearchConfig, out_dir: str | Path, progress: bool = True, resume: bool = False,
               overwrite: bool = False) -> dict[str, Any]:
    """Runs a whole search, writing `config.json`, `history.jsonl`, `checkpoints/` and `summary.json` to `out_dir`.

    Every check (of the run directory, the config, the data) runs before anything is written. `out_dir`
    must be absent or empty unless `overwrite`, which replaces it whole; if the search fails before its first
    checkpoint, it leaves no directory behind (`evonas.run_dir.created`). With `resume`, continues the run in
    `out_dir` from its newest usable checkpoint instead (`config` must be the one in its config.json); the
    history and summary are those of a run that never stopped.

    Raises:
        InputError: a run directory, config or dataset that cannot be used; nothing was written then.
    """
    start = clock()
    out = Path(out_dir)
    space = config.search_space()
    if resume and (conflicts := config_conflicts(load_run_config(out), dataclasses.asdict(config))):
        raise ResumeError(f"{out} was started with another config: {', '.join(conflicts)}")
    if not resume:
        run_dir.check_new(out, overwrite)
    task = load_task(config)
    model = PopulationModel(space, task.vocab_size, task.max_length, task.num_classes)
    population = Population(model, config.train_config())
    strategy, objective = make_strategy(config, space), config.make_objective()
    num_generations = config.num_children // config.children_per_generation  # at most, with --budget
    parent_params = (inherit_lib.empty_store(model.stored_shapes, config.population_size, space.num_genes)
                     if config.inherit else None)
    initial = Progress(strategy.init(), history_bytes=0, wall_seconds=0.0, compilations=0,
                       budget=budget_lib.Decision.undecided(num_generations), parent_params=parent_params)
    if resume:
        data_lib.write_task_files(task, out)
    else:
        with run_dir.created(out, overwrite):
            (out / "config.json").write_text(json.dumps(
                {"config": dataclasses.asdict(config), "space": space.to_json()}, indent=2))
            data_lib.write_task_files(task, out)
            (out / "history.jsonl").touch()
            with Checkpoints(out / CHECKPOINTS) as checkpoints:
                checkpoints.save(initial)  # so that a kill during the first generation can resume too

    train, validation = population.put_split(task.train), population.put_split(task.validation)
    budget = memory_budget_bytes() if config.memory_budget_gb is None else int(config.memory_budget_gb * 2**30)
    chunk_size = population.chunk_size(budget)
    key = jax.random.key(config.seed)
    with Checkpoints(out / CHECKPOINTS) as checkpoints, open(out / "history.jsonl", "ab") as log, \
            tqdm(total=config.num_children, disable=not progress, desc=f"{config.strategy} search", unit="child") as bar:
        earlier = checkpoints.restore_latest(initial) if resume else initial
        history = read_history(out / "history.jsonl", earlier.history_bytes, int(earlier.strategy.next_id))
        log.truncate(earlier.history_bytes)  # drops the lines of a generation that no checkpoint covers
        bar.update(len(history))
        state, decision, parent_params = earlier.strategy, earlier.budget, earlier.parent_params
        monitor = GenerationMonitor(out, config.population_size, config.steps, int(decision.generations),
                                    int(state.generation))
        bar.total = int(decision.generations) * config.children_per_generation
        since = clock()  # a generation's seconds run from the previous one's, so they count its checkpoint and logs
        for generation in range(int(state.generation), num_generations):
            if generation >= decision.generations:
                break
            interrupts.check()  # a Ctrl-C that Python dropped inside a gc callback stops the search here
            traces = population.traces
            key_ask, key_init, key_train = jax.random.split(jax.random.fold_in(key, generation), 3)
            children, parents, predicted = predictor.propose(strategy, key_ask, state, history, space,
                                                             config.predictor_pool, config.min_predictor_records())
            start_from, inherited = None, None
            if config.inherit:  # each child's first parent's parameters, where its parts match (evonas.inherit)
                *start_from, inherited = inherit_lib.plan(model, space, parent_params, np.asarray(children),
                                                     np.asarray(parents))
            fitted = population.fit(
                jax.random.split(key_init, config.children_per_generation), np.asarray(children), train,
                {"validation": validation}, key_train, config.steps, chunk_size, hurdles=config.hurdles(),
                keep_params=config.inherit, start_from=start_from)
            metrics = children_metrics(space, model, np.asarray(children), fitted, objective)
            first_id = int(state.next_id)
            state = strategy.tell(state, children, objective.selection(metrics))
            scores = np.asarray(objective.fitness(metrics))
            if config.inherit:  # only the members still alive can be parents
                parent_params = inherit_lib.keep_alive(parent_params, np.asarray(state.ids),
                                                       np.arange(first_id, first_id + len(children)),
                                                       np.asarray(children), fitted["params"])
            for j, genome in enumerate(np.asarray(children)):
                record = child_record(genome, first_id + j, generation, np.asarray(parents[j]), scores[j],
                                      {name: values[j] for name, values in metrics.items()})
                record |= {"steps": int(fitted["steps"][j]), "hurdle_stopped": bool(fitted["steps"][j] < config.steps)}
                if predicted is not None:  # only where the predictor chose this generation
                    record["predicted_fitness"] = float(predicted[j])
                if inherited is not None:
                    record["inherited"] = float(inherited[j])  # share of its parameters from its first parent
                history.append(record)
                log.write((json.dumps(record) + "\n").encode())
            log.flush()
            os.fsync(log.fileno())  # the checkpoint below points into these bytes, so they must be on disk first
            now = clock()
            decision = budget_lib.decide(decision, config.budget_minutes, generation, now - since,
                                         earlier.wall_seconds + now - start, population.traces > traces,
                                         most=num_generations)
            since = now
            monitor.num_generations = bar.total = int(decision.generations)
            bar.total *= config.children_per_generation
            checkpoints.save(Progress(state, history_bytes=os.fstat(log.fileno()).st_size,
                                      wall_seconds=earlier.wall_seconds + now - start,
                                      compilations=earlier.compilations + population.traces, budget=decision,
                                      parent_params=parent_params))
            monitor.record(generation, history, earlier.wall_seconds + clock() - start,
                           earlier.compilations + population.traces)
            bar.update(config.children_per_generation)
            bar.set_postfix(monitor.postfix())
        monitor.close()

    summary = summarize(space, history, config, earlier.compilations + population.traces,
                        earlier.wall_seconds + clock() - start)
    if config.budget_minutes is not None:
        summary["budget"] = decision.to_json(config.budget_minutes)
    if objective.is_pareto:
        (out / fitness.PARETO_FILE).write_text(json.dumps(objective.pareto_front(history), indent=2))
        summary["pareto_front"] = fitness.PARETO_FILE
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def children_metrics(space, model, children: np.ndarray, fitted, objective: fitness.Objective):
    """A generation's metrics by name, arrays over children (see `evonas.fitness`); latencies only where used."""
    losses, val_loss, steps = fitted["losses"], fitted["validation_loss"], fitted["steps"]
    trained = np.arange(losses.shape[1]) < steps[:, None]  # a child stopped at a hurdle has NaN losses after it
    metrics = {"val_accuracy": fitted["validation_accuracy"], "val_loss": val_loss,
               "train_loss": losses[np.arange(len(losses)), steps - 1],
               "diverged": ~(np.isfinite(losses) | ~trained).all(axis=1) | ~np.isfinite(val_loss)}
    costs = [child_costs(model, Architecture.from_genome(space, genome), objective.latency_batch_sizes())
             for genome in children]
    return metrics | {name: np.asarray([c[name] for c in costs]) for name in costs[0]}


def child_record(genome, child_id, generation, parents, score, metrics):
    """One line of history.jsonl; `fitness` is null for a child that diverged or broke a constraint."""
    diverged = bool(metrics["diverged"])
    record = {
        "id": child_id,
        "generation": generation,
        "genome": [int(g) for g in genome],
        "parents": [int(p) for p in parents if p >= 0],
        "fitness": float(score) if np.isfinite(score) else None,
        "val_accuracy": None if diverged else float(metrics["val_accuracy"]),
        "val_loss": None if diverged else float(metrics["val_loss"]),
        "train_loss": None if diverged else float(metrics["train_loss"]),
        "params": int(metrics["params"]),
        "flops": int(metrics["flops"]),
        "diverged": diverged,
    }
    return record | {name: float(value) for name, value in metrics.items() if name.startswith("latency_ms")}


def summarize(space: SearchSpace, history, config: SearchConfig, compilations: int, wall_seconds: float):
    """The best child, and enough context to judge it: first-generation median, count, cost."""
    best = fitness.best_record(history)
    first = [r["val_accuracy"] for r in history if r["generation"] == 0 and not r["diverged"]]
    return {
        "best_id": best and best["id"],
        "best_genome": best and best["genome"],
        "best_architecture": best and Architecture.from_genome(space, best["genome"]).to_dict(),
        "best_val_accuracy": best and best["val_accuracy"],
        "best_params": best and best["params"],
        "best_fitness": best and best["fitness"],
        "first_generation_median_val_accuracy": float(np.median(first)) if first else None,
        "children": len(history),
        "train_steps": sum(r.get("steps", config.steps) for r in history),
        "diverged": sum(r["diverged"] for r in history),
        "infeasible": sum(not fitness.is_candidate(r) and not r["diverged"] for r in history),
        "objective": config.make_objective().to_json(),
        "generations": len(history) // config.children_per_generation,
        "strategy": config.strategy,
        "seed": config.seed,
        "wall_seconds": float(wall_seconds),
        "compilations": int(compilations),
    }
