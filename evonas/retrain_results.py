"""What a retrain reports: its members' scores per genome and seed, validation's choice of genome and seed,
the refit's length, and the rows of `retrain/results.json`. Test accuracy is reported here, never used to choose."""

from typing import Any

import numpy as np

from evonas.models import Architecture, count_params
from evonas.space import SearchSpace
from evonas.supernet import PopulationModel


def per_seed(fitted: dict[str, Any], num_seeds: int, top_k: int) -> dict[str, np.ndarray]:
    """Each of val, test, diverged and best_step as [genome rank, seed]."""
    diverged = ~np.isfinite(fitted["losses"]).all(axis=1) | ~np.isfinite(fitted["test_loss"])
    return {name: np.asarray(values).reshape(num_seeds, top_k).T for name, values in
            (("val", fitted["validation_accuracy"]), ("test", fitted["test_accuracy"]), ("diverged", diverged),
             ("best_step", fitted["best_step"]))}


def best_by_validation(per_seed) -> tuple[int, int]:
    """The genome with the best mean validation accuracy over its seeds, and its best seed; diverged ones last."""
    validation = np.where(per_seed["diverged"], -np.inf, per_seed["val"])
    rank = int(validation.mean(axis=1).argmax())
    return rank, int(validation[rank].argmax())


def refit_steps(best_steps, train_size: int, validation_size: int, unit: int) -> int:
    """Steps for as many epochs of train + validation as the median of `best_steps` is of train alone, to the
    nearest positive multiple of `unit` (the train call's steps)."""
    steps = float(np.median(best_steps)) * (train_size + validation_size) / train_size
    return unit * max(1, round(steps / unit))


def test_accuracies(test: np.ndarray) -> dict[str, Any]:
    """Test accuracies over seeds, their mean and sample std (None over one seed: undefined)."""
    return {"test_accuracy_mean": float(test.mean()),
            "test_accuracy_std": float(test.std(ddof=1)) if len(test) > 1 else None,
            "test_accuracies": [float(a) for a in test]}


def genome_result(space: SearchSpace, model: PopulationModel, record: dict[str, Any], per_seed, rank: int):
    """The row of the genome at `rank`: its search record, size, and its seeds' scores at their kept steps."""
    arch = Architecture.from_genome(space, record["genome"])
    return {
        "rank": rank,
        "search_id": record["id"],
        "search_fitness": record["fitness"],
        "genome": record["genome"],
        **({"search_genome": record["search_genome"]} if "search_genome" in record else {}),  # before --tune
        "architecture": arch.to_dict(),
        "params": count_params(model.standalone_shapes(arch)),
        **test_accuracies(per_seed["test"][rank]),
        "validation_accuracies": [float(a) for a in per_seed["val"][rank]],  # at each seed's kept step
        "best_steps": [int(s) for s in per_seed["best_step"][rank]],  # the step of the kept parameters
        "diverged": [bool(d) for d in per_seed["diverged"][rank]],
    }


def refit_result(refitted: dict[str, Any], data_size: int, batch_size: int) -> dict[str, Any]:
    """What the refit trained (epochs of train + validation, `data_size` examples) and its test accuracies."""
    return {"rank": refitted["rank"], "steps": refitted["steps"], "epochs": refitted["steps"] * batch_size / data_size,
            **test_accuracies(refitted["per_seed"]["test"][0]),
            "diverged": [bool(d) for d in refitted["per_seed"]["diverged"][0]]}


def fold_results(space: SearchSpace, model: PopulationModel, finished: list, with_validation: bool,
                 fold_seed: int) -> dict[str, Any]:
    """Per fold, its chosen genome's test accuracy (mean over seeds); over folds, their mean ± sample std."""
    folds = []
    for fold, (records, tuned, _, _, per_seed, refitted) in enumerate(finished):
        chosen, _ = (0, 0) if with_validation else best_by_validation(per_seed)
        result = genome_result(space, model, records[chosen], per_seed, chosen)
        test = result["test_accuracies"] if refitted is None else refitted["per_seed"]["test"][0].tolist()
        folds.append({"fold": fold, "rank": chosen, "genome": result["genome"],
                      "test_accuracy": float(np.mean(test)), "test_accuracies": [float(a) for a in test],
                      "validation_accuracies": result["validation_accuracies"], "best_steps": result["best_steps"],
                      "refit_steps": refitted and refitted["steps"], "tuning": tuned and tuned["report"]})
    accuracies = np.asarray([f["test_accuracy"] for f in folds])
    searched = finished[0][0][0].get("search_genome", finished[0][0][0]["genome"])  # the search's best genome
    return {"genome": searched, "architecture": Architecture.from_genome(space, searched).to_dict(),
            "test_accuracy_mean": float(accuracies.mean()), "test_accuracy_std": float(accuracies.std(ddof=1)),
            "test_accuracies": [float(a) for a in accuracies],
            "validation_accuracies": [float(np.mean(f["validation_accuracies"])) for f in folds],
            "num_folds": len(folds), "fold_seed": fold_seed, "folds": folds, "exported": None, "genomes": [],
            "tuning": None}
