"""Retrain a search's best genomes from scratch with several seeds, score them on the test split, export one.

The k genomes × N seeds are one population: one compiled program initializes, trains and evaluates all
of them. Each seed has its own keys: members of different seeds differ in initialization, data order and
dropout, while the k genomes of one seed share them, as the members of a search's generation do.

This is the only place in evonas that reads a task's test split.
"""

import dataclasses
import functools
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from evonas import folds as folding
from evonas import retrain_results as scoring
from evonas import run_dir as run_dirs
from evonas import tune as tuning
from evonas.budget import RETRAIN_EPOCHS_FACTOR, steps_for
from evonas.data import TASK_FILE, TOKENIZER_FILE, TextSplit, read_task_files
from evonas.errors import InputError, RunDirError
from evonas.export import export_model
from evonas.fitness import is_candidate
from evonas.layers import Params
from evonas.models import Architecture
from evonas.population import Population
from evonas.search import SearchConfig, load_task, saved_config
from evonas.sharding import memory_budget_bytes
from evonas.space import SearchSpace
from evonas.supernet import PopulationModel
from evonas.text import Tokenizer

logger = logging.getLogger(__name__)
RUN_FILES = ("config.json", "history.jsonl", TOKENIZER_FILE, TASK_FILE)  # what retrain reads of a search run
STEPS_FACTOR = 4  # default retrain steps per search step: the final model gets more than the search's screening
WARMUP_FRACTION = 0.05  # default share of the retrain steps over which the learning rate warms up
EVALUATIONS = 10  # default most validation scores per member: each costs a pass over validation for every member


@dataclasses.dataclass(frozen=True)
class Run:
    """What `evonas search` left in a run directory."""

    path: Path
    config: SearchConfig
    space: SearchSpace
    history: list[dict[str, Any]]
    tokenizer: Tokenizer  # what encoded the search's data
    label_names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Retrained:
    """The retrained members (member m = seed index m // k, genome rank m % k) and the written results."""

    population: Population
    genomes: np.ndarray  # int32[k * N, num_genes]
    params: Params  # every member's trained stored parameters, on the host, leading member axis k * N
    results: dict[str, Any]
    fold_params: list[Params] | None = None  # with folds: `params` of each fold (`params` is the last fold's)


def load_run(run_dir: str | Path) -> Run:
    """Reads a search's run directory; an unfinished search is named in a warning on the log.

    Raises:
        RunDirError: if the directory lacks one of its files, or they are not valid.
    """
    path = Path(run_dir)
    if missing := [name for name in RUN_FILES if not (path / name).is_file()]:
        raise RunDirError(f"RUN_DIR {path} is not a search run directory: missing {', '.join(missing)} "
                          "(`evonas search --out DIR` writes one)")
    try:
        saved = json.loads((path / "config.json").read_text())
        history = [json.loads(line) for line in (path / "history.jsonl").read_text().splitlines() if line.strip()]
        config = saved_config(saved["config"], path / "config.json")
        space = SearchSpace.from_json(saved["space"])
        tokenizer, label_names = read_task_files(path)
    except (ValueError, KeyError, TypeError) as error:  # json's and the files' own checks
        if isinstance(error, RunDirError):
            raise
        raise RunDirError(f"RUN_DIR {path}: its files are not those of an `evonas search` run ({error})") from None
    if not run_dirs.is_finished(path):
        done, total = run_dirs.generations_done(path), run_dirs.num_generations(path)
        total = total if config.budget_minutes is None else f"at most {total}"  # --budget decides how many
        logger.warning(f"warning: {path} holds an unfinished search ({done} of {total} generations, {len(history)} "
                       f"children); retraining the best of those. `evonas search --resume {path}` finishes it first.")
    return Run(path, config, space, history, tokenizer, label_names)


def top_genomes(history: list[dict[str, Any]], top_k: int) -> list[dict[str, Any]]:
    """The `top_k` distinct genomes with the highest fitness, each as its best record; ties keep search order."""
    if top_k < 1:
        raise InputError(f"--top-k must be at least 1, got {top_k}")
    distinct: dict[tuple[int, ...], dict[str, Any]] = {}
    for record in sorted((r for r in history if is_candidate(r)), key=lambda r: -r["fitness"]):
        distinct.setdefault(tuple(record["genome"]), record)
    if len(distinct) < top_k:
        raise InputError(f"--top-k {top_k} asked, but the run has only {len(distinct)} distinct genomes that did not "
                         "diverge nor break a constraint")
    return list(distinct.values())[:top_k]


def retrain(run_dir: str | Path, top_k: int = 1, num_seeds: int = 3, steps: int | None = None,
            with_validation: bool = False, progress: bool = True, warmup_fraction: float = WARMUP_FRACTION,
            eval_every: int | None = None, epochs: float | None = None, tune: int | None = None,
            folds: int | None = None, refit: bool | None = None) -> Retrained:
    """Retrains the run's top genomes from scratch, writes `retrain/results.json` and exports `retrain/model/`.

    Each member's learning rate (its genome's) warms up linearly from 0 over `warmup_fraction` of the steps,
    then decays by a cosine to 0 at the last step. Validation is scored every `eval_every` steps and each member
    keeps the parameters of its best validation score, on which test is then scored once. The genome with the
    best mean validation accuracy over its seeds is chosen: its test accuracies are the top-level ones in the
    results, and its seed with the best validation accuracy is exported. Test accuracy picks nothing.

    Args:
        run_dir: a directory written by `evonas search`.
        top_k: how many distinct genomes, best search fitness first.
        num_seeds: seeds 0..N-1 per genome; the test accuracy is reported as their mean ± sample std.
        steps: training steps per member; None: `epochs` of the training data (`evonas.budget.steps_for`), or
            `STEPS_FACTOR` times the search's steps per child when neither it nor the search set epochs.
        with_validation: train on train + validation. Validation accuracy then scores training data, so it
            no longer picks the genome, seed or step: the last step's parameters of the search's best genome
            and its first seed are exported.
        progress: show a progress bar.
        epochs: passes over the training data (train, + validation with `with_validation`) that set the steps;
            None is `RETRAIN_EPOCHS_FACTOR` times the search's epochs, where the search had them.
        warmup_fraction: the learning rate's warm-up, a share of `steps` in [0, 1).
        eval_every: steps between validation scores; it must divide `steps`. None: the fewest train calls
            (of the gcd of `steps` and the search's `steps_per_call`) that score at most `EVALUATIONS` times.
        tune: first tune each genome's training genes (`evonas.tune`): this many settings, trained on train
            and picked by validation; the retrain then trains the chosen setting. None: no tuning.
        folds: K-fold cross-validation (`evonas.folds`) over all labelled data instead of the task's splits:
            the retrain (and tuning) runs once per fold, nothing is exported, and the top-level test accuracy
            is the mean ± sample std over folds of each fold's chosen genome's mean over seeds. None: no folds.
        refit: once validation has chosen the genome and, by its seeds' median best step, how long to train it,
            train that genome again from scratch, same seeds, on train + validation for as many epochs
            (`refit_steps`), its schedule over those steps, and score test at the last step: the top-level test
            accuracies and the exported model are then the refit's. None: refit when the search set its steps
            by epochs (real text's defaults) and `with_validation` is off.

    Returns:
        The population, its genomes and trained states, and the results written to `results.json` (with
        `folds`, those of the last fold).
    """
    start = time.perf_counter()
    if num_seeds < 1:
        raise InputError(f"--seeds must be at least 1, got {num_seeds}")
    if steps is not None and steps < 1:
        raise InputError(f"--steps must be at least 1, got {steps}")
    if top_k < 1:
        raise InputError(f"--top-k must be at least 1, got {top_k}")
    if not 0.0 <= warmup_fraction < 1.0:
        raise InputError(f"--warmup-fraction must be in [0, 1), got {warmup_fraction}")
    if eval_every is not None and eval_every < 1:
        raise InputError(f"--eval-every must be at least 1, got {eval_every}")
    if epochs is not None and not 0 < epochs <= 10**4:
        raise InputError(f"--epochs must be a number above 0 and at most 10,000, got {epochs}")
    if epochs is not None and steps is not None:
        raise InputError("give --steps or --epochs, not both: epochs set the steps")
    if refit and with_validation:
        raise InputError("give --refit or --with-validation, not both: a refit already trains on train + validation")
    run = load_run(run_dir)
    refit = run.config.epochs is not None and not with_validation if refit is None else refit
    records = top_genomes(run.history, top_k)
    if tune is not None:
        tuning.settings(run.space, records[0]["genome"], tune)  # checks --tune before any data or training
    task = load_task(run.config)
    if (task.tokenizer, task.label_names) != (run.tokenizer, run.label_names):
        raise InputError(f"the data of {run.path} changed since its search: its tokenizer or label names differ "
                         f"from those in {TOKENIZER_FILE} and {TASK_FILE}")
    # Epochs count passes over the task's train split (and validation, with --with-validation), folds or not.
    train_size = len(task.train.labels) + (len(task.validation.labels) if with_validation else 0)
    if epochs is None and steps is None and run.config.epochs is not None:
        epochs = RETRAIN_EPOCHS_FACTOR * run.config.epochs  # the search's rule, on the data retrain trains on
    if steps is None:
        steps = STEPS_FACTOR * run.config.steps if epochs is None else steps_for(train_size, run.config.batch_size,
                                                                               epochs)
    steps_per_call = math.gcd(steps, run.config.steps_per_call, eval_every or 0)
    if eval_every is not None and steps % eval_every:
        raise InputError(f"--eval-every {eval_every} must divide the retrain's {steps} steps")
    eval_every = eval_every or default_eval_every(steps, steps_per_call)
    fold_seed = run.config.task_seed
    if folds is None:
        parts = [(task.train, task.validation, task.test)]
    else:
        data = folding.labelled_data(task)
        indices = folding.fold_indices(len(data.labels), folds, fold_seed)
        parts = [folding.fold_splits(data, indices, i, folding.validation_share(task), fold_seed) for i in range(folds)]

    model = PopulationModel(run.space, task.vocab_size, task.max_length, task.num_classes)
    train_config = dataclasses.replace(run.config.train_config(), steps_per_call=steps_per_call,
                                       schedule_steps=steps, warmup_fraction=warmup_fraction)
    population = Population(model, train_config)
    budget = memory_budget_bytes() if run.config.memory_budget_gb is None else int(run.config.memory_budget_gb * 2**30)
    chunk = population.chunk_size(budget)
    fit = functools.partial(_fit, population, steps=steps, eval_every=eval_every, chunk=chunk, progress=progress)
    refits: dict[int, Population] = {}  # by steps
    finished = []
    for fold, (train, validation, test) in enumerate(parts):
        tuned, trained = None, records
        if tune is not None:  # the search's genomes, tuned on this fold's train and validation
            tuned = _tune(run.space, fit, [r["genome"] for r in records], tune, train, validation)
            trained = [r | {"genome": g, "search_genome": r["genome"]} for r, g in zip(records, tuned["genomes"])]
        train_split = _concatenate(train, validation) if with_validation else train
        fitted, genomes = fit([r["genome"] for r in trained], num_seeds, train_split, validation, test,
                              with_validation, desc="retrain" if folds is None else f"fold {fold}")
        per_seed = scoring.per_seed(fitted, num_seeds, top_k)
        refitted = None
        if refit:
            chosen, _ = scoring.best_by_validation(per_seed)
            refit_to = scoring.refit_steps(per_seed["best_step"][chosen], len(train.labels), len(validation.labels),
                                           steps_per_call)
            if refit_to not in refits:  # its schedule spans its steps: one compiled program per length
                refits[refit_to] = Population(model, dataclasses.replace(train_config, schedule_steps=refit_to))
            refitted, _ = _fit(refits[refit_to], [trained[chosen]["genome"]], num_seeds, _concatenate(train, validation),
                               validation, test, True, steps=refit_to, eval_every=steps_per_call, chunk=chunk,
                               progress=progress, desc="refit" if folds is None else f"fold {fold} refit")
            refitted |= {"rank": chosen, "steps": refit_to, "per_seed": scoring.per_seed(refitted, num_seeds, 1)}
        finished.append((trained, tuned, fitted, genomes, per_seed, refitted))

    records, tuned, fitted, genomes, per_seed, refitted = finished[-1]
    chosen, seed_index = (0, 0) if with_validation else scoring.best_by_validation(per_seed)
    final = fitted if refitted is None else refitted  # the trained models whose test accuracy is reported
    out = run.path / "retrain"
    if folds is None:
        member = seed_index if refitted else seed_index * top_k + chosen
        arch = Architecture.from_genome(run.space, records[chosen]["genome"])
        export_model(out / "model", run.space, records[chosen]["genome"],
                     model.extract(arch, jax.tree.map(lambda a: a[member], final["params"])), task.tokenizer,
                     task.label_names)
    else:
        out.mkdir(exist_ok=True)

    genome_results = [scoring.genome_result(run.space, model, record, per_seed, rank)
                      for rank, record in enumerate(records)]
    best = genome_results[chosen]
    refit_result = refitted and scoring.refit_result(refitted, len(train_split.labels) + len(validation.labels),
                                                     run.config.batch_size)
    reported = best if refitted is None else refit_result
    results = {
        **{key: best[key] for key in ("genome", "architecture", "validation_accuracies")},
        **{key: reported[key] for key in ("test_accuracy_mean", "test_accuracy_std", "test_accuracies")},
        "seeds": list(range(num_seeds)),
        "steps": steps,
        "epochs": epochs,
        "warmup_fraction": warmup_fraction,
        "eval_every": None if with_validation else eval_every,
        "batch_size": run.config.batch_size,
        "with_validation": with_validation,
        "exported": {"rank": chosen, "seed": seed_index, "path": "model", "refit": refitted is not None,
                     "test_accuracy": reported["test_accuracies"][seed_index],
                     "validation_accuracy": best["validation_accuracies"][seed_index],
                     "best_step": best["best_steps"][seed_index] if refitted is None else refitted["steps"]},
        "refit": refit_result,
        "genomes": genome_results,
        "tuning": tuned and tuned["report"],
        "compilations": population.traces + sum(p.traces for p in refits.values()),
        "wall_seconds": time.perf_counter() - start,
    }
    if folds is not None:
        results |= scoring.fold_results(run.space, model, finished, with_validation, fold_seed)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if refitted is not None:
        genomes = np.asarray([records[chosen]["genome"]] * num_seeds, np.int32)
    return Retrained(population if refitted is None else refits[refitted["steps"]], genomes, final["params"], results,
                     None if folds is None else [(f[2] if f[5] is None else f[5])["params"] for f in finished])


def _fit(population: Population, genomes: list, num_seeds: int, train: TextSplit, validation: TextSplit,
         test: TextSplit | None, last_step: bool, *, steps: int, eval_every: int, chunk: int, progress: bool,
         seed_base: int = 0, group: int = 1, desc: str = "retrain") -> tuple[dict[str, Any], np.ndarray]:
    """Trains `genomes` x seeds as one population (member m: seed m // k, genome m % k), scores test (if any) at
    each member's best validation step, or at its last with `last_step`; returns the fit and the genomes. Each
    `group` consecutive genomes share their initialization key."""
    top_k = len(genomes)
    num_members = top_k * num_seeds
    members = np.asarray(list(genomes) * num_seeds, np.int32)
    seed_keys = [jax.random.split(jax.random.key(seed_base + seed)) for seed in range(num_seeds)]  # (init, train)
    init_keys = jnp.stack([jax.random.fold_in(keys[0], rank // group) for keys in seed_keys for rank in range(top_k)])
    train_keys = jnp.stack([keys[1] for keys in seed_keys for _ in range(top_k)])
    splits = {"validation": population.put_split(validation)}
    if test is not None:
        splits["test"] = population.put_split(test)
    select = None if last_step else splits["validation"]  # validation, never test, picks the step
    with tqdm(total=steps * num_members, disable=not progress, desc=desc, unit="member-step") as bar:
        fitted = population.fit(init_keys, members, population.put_split(train), splits, train_keys, steps, chunk,
                                keep_params=test is not None, progress=lambda member_steps: bar.update(member_steps),
                                select=select, eval_every=eval_every)
    if last_step:
        fitted["best_step"] = np.full(num_members, steps)
    return fitted, members


def _tune(space: SearchSpace, fit, genomes: list, num: int, train: TextSplit, validation: TextSplit):
    """Each genome's `num` settings, trained side by side on train with the tuning seed and scored on
    validation only; the best validation setting of each genome, and what the tuning saw."""
    candidates = np.concatenate([tuning.settings(space, genome, num) for genome in genomes])
    fitted, _ = fit(list(candidates), 1, train, validation, None, False, seed_base=tuning.TUNING_SEED, group=num,
                    desc="tune")  # a genome's settings share its initialization and every batch
    validation_accuracy = np.asarray(fitted["validation_accuracy"]).reshape(len(genomes), num)
    diverged = (~np.isfinite(fitted["losses"]).all(axis=1) | ~np.isfinite(fitted["validation_loss"]))
    diverged = diverged.reshape(len(genomes), num)
    best_steps = np.asarray(fitted["best_step"]).reshape(len(genomes), num)
    chosen = [tuning.best_setting(v, d) for v, d in zip(validation_accuracy, diverged)]
    tuned = [candidates[rank * num + c].tolist() for rank, c in enumerate(chosen)]
    report = [{"settings": [tuning.describe(space, g) for g in candidates[rank * num:(rank + 1) * num]],
               "validation_accuracies": [float(a) for a in validation_accuracy[rank]],
               "best_steps": [int(s) for s in best_steps[rank]], "diverged": [bool(d) for d in diverged[rank]],
               "chosen": chosen[rank], "chosen_setting": tuning.describe(space, tuned[rank])}
              for rank in range(len(genomes))]
    return {"genomes": tuned, "report": report}


def default_eval_every(steps: int, steps_per_call: int) -> int:
    """Steps between validation scores: the fewest whole train calls that divide `steps` and score at most
    `EVALUATIONS` times (a number of calls without such a divisor scores at its last step only)."""
    calls = steps // steps_per_call
    return steps_per_call * next(k for k in range(1, calls + 1) if calls % k == 0 and calls // k <= EVALUATIONS)


def _concatenate(first: TextSplit, second: TextSplit) -> TextSplit:
    return TextSplit(np.concatenate([first.tokens, second.tokens]), np.concatenate([first.labels, second.labels]))
