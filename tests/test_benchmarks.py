"""The benchmarks run end to end at smoke sizes: the population benchmark, whole searches, the accelerator table
(on the CPU here), the PyTorch peer, and the executed-FLOP counts and CPU proxy of the grouped form."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import EXPERIMENTS, load_experiment

from evonas.models import Architecture, count_params, forward_flops
from evonas.population import Population
from evonas.space import text_classifier_space
from evonas.supernet import PopulationModel


def test_executed_flops_follow_the_branches_a_genome_takes():
    """For one conv3 block, the population's loss and gradients ask for the standalone model's 3 forward passes
    plus the block's recomputation: 4/3 of the useful FLOPs minus the unrecomputed head."""
    executed_flops = load_experiment("executed_flops")
    space = text_classifier_space(max_blocks=2, ops=("attention", "conv3", "gru"), widths=(16, 32))
    model = PopulationModel(space, vocab_size=8, max_length=12, num_classes=3)
    population = Population(model)
    genome = space.encode({**space.decode(np.zeros(space.num_genes, np.int32)), "num_blocks": 1, "block0_op": "conv3",
                           "block1_op": "attention", "width": 32})
    tokens = jax.ShapeDtypeStruct((4, 12), jnp.int32)
    closed = jax.make_jaxpr(population.steps._member_loss_and_grads)(
        model.stored_shapes, jax.ShapeDtypeStruct(genome.shape, jnp.int32), tokens,
        jax.ShapeDtypeStruct((4,), jnp.int32), jax.random.key(0))
    leaves = jax.tree.leaves(model.stored_shapes)
    executed = executed_flops.member_step_flops(closed, [*leaves, genome, np.zeros((4, 12), np.int32),
                                                         np.zeros(4, np.int32), jax.random.key(0)])
    arch = Architecture.from_genome(space, genome)
    head = 2 * 32 * 3
    block = forward_flops(arch, 12, 3) - head
    assert executed == 4 * (4 * block + 3 * head)  # batch 4: forward, recompute, two backward matmuls; head: 3


@pytest.mark.slow
def test_population_benchmark_quick_run_reports_every_method_with_its_processes(tmp_path, monkeypatch):
    """The smoke run writes the JSON shape other scripts read; the loops and the torch peer run one process per
    core, each pinned to its own core; the run from the persistent compilation cache trains exactly as the
    fresh compilation does."""
    monkeypatch.syspath_prepend(str(EXPERIMENTS))  # the benchmark imports its sibling modules, as a script does
    bench = load_experiment("bench_population")
    results = bench.main(["--quick", "--out", str(tmp_path / "bench.json")])
    assert json.loads((tmp_path / "bench.json").read_text()) == json.loads(json.dumps(results))
    (row,) = results["configs"]
    cores = len(bench.worker_cores())
    figures = ("total_seconds", "in_process_seconds", "compile_seconds", "member_steps_per_second", "useful_gflops",
               "executed_gflops", "compilations", "peak_memory_bytes", "allocator", "processes")
    for name, method in bench.METHODS.items():
        if row[name] is None:
            assert method.program == "torch"  # skipped where torch is not installed
            continue
        assert set(figures) <= set(row[name]) and row[name]["allocator"] == results["allocators"][name]
        if method.per_core:
            workers = row[name]["workers"]
            assert row[name]["processes"] == min(cores, 3) == len(workers)
            assert sorted(w["cpu_affinity"][0] for w in workers) == bench.worker_cores()[:len(workers)]
            assert all(len(w["cpu_affinity"]) == 1 for w in workers) and sum(w["genomes"] for w in workers) == 3
            assert row[name]["member_steps_per_second"] == pytest.approx(
                sum(w["member_steps_per_second"] for w in workers))
        else:
            assert row[name]["processes"] == 1
    if row["torch_loop_2_threads"] is not None:
        assert row["torch_loop_2_threads"]["threads"] == 2
    assert row["evonas"]["compile_seconds"] > 2 * row["evonas_cached"]["compile_seconds"]  # the cache was empty
    assert row["evonas_cached"]["mean_final_loss"] == row["evonas"]["mean_final_loss"]
    assert row["evonas"]["compilations"] == 2 and row["natural_loop"]["compilations"] == 3


def test_genomes_split_interleaved_over_workers_cover_each_genome_once(monkeypatch):
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    methods = load_experiment("bench_methods")
    groups = methods.split_interleaved(7, 2)
    assert [g.tolist() for g in groups] == [[0, 2, 4, 6], [1, 3, 5]]
    assert [g.tolist() for g in methods.split_interleaved(1, 4)] == [[0]]  # no idle worker processes


def test_repeated_runs_report_the_median_run_and_every_run(monkeypatch):
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    bench = load_experiment("bench_population")
    runs = [{"wall_seconds": t, "id": i} for i, t in enumerate([5.0, 3.0, 4.0, 9.0])]
    median = bench.median_run(runs)
    assert median["id"] == 2 and median["runs"] == runs  # of an even count, the faster middle one
    assert bench.median_run([]) is None


@pytest.mark.slow
def test_search_benchmark_quick_run_compares_the_same_children(tmp_path, monkeypatch):
    """The warm search repeats the cold one bit for bit, and the peer trains and scores every child it
    trained, one process per core."""
    pytest.importorskip("torch", reason="the PyTorch peer needs the bench extra: pip install -e '.[bench]'")
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    bench = load_experiment("bench_population")
    results = bench.main(["--search", "--quick", "--out", str(tmp_path / "search.json")])
    assert json.loads((tmp_path / "search.json").read_text()) == json.loads(json.dumps(results))
    (row,) = results["searches"].values()
    assert row["same_history_cold_warm"] and row["evonas_cold"]["children"] == 8
    torch = row["torch_per_core"]
    assert sum(w["children"] for w in torch["workers"]) == 8 and torch["threads_per_process"] == 1
    assert 0 <= torch["mean_val_accuracy"] <= torch["best_val_accuracy"] <= 1
    assert row["evonas_warm_faster_by"] == pytest.approx(torch["end_to_end_seconds"]
                                                         / row["evonas_warm"]["end_to_end_seconds"])


@pytest.mark.slow
def test_accelerator_mode_quick_run_measures_every_phase_and_its_ratios(tmp_path, monkeypatch):
    """On whatever backend JAX finds (here the CPU), every phase of the accelerator table runs at tiny sizes
    and the ratios are taken between phases of the same run."""
    pytest.importorskip("torch", reason="the PyTorch peer needs the bench extra: pip install -e '.[bench]'")
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    bench = load_experiment("bench_population")
    results = bench.main(["--accelerator", "--quick", "--out", str(tmp_path / "acc.json")])
    assert json.loads((tmp_path / "acc.json").read_text()) == json.loads(json.dumps(results))
    phases = results["phases"]
    assert {name: r["status"] for name, r in phases.items() if r["status"] != "ok"} == {}
    assert {"evonas_p4", "evonas_p8", "torch_2", "scan_loop_2", "evonas_p8_bfloat16", "search_8"} <= set(phases)
    ceilings = [r["member_steps_per_second"] for name, r in phases.items() if name.startswith("ceiling_")]
    assert ceilings and results["ratios"]["evonas_p4_over_ceiling_mean"] == pytest.approx(
        phases["evonas_p4"]["member_steps_per_second"] / np.mean(ceilings))
    assert results["ratios"]["search_speedup_over_torch_extrapolated"] == pytest.approx(
        8 * phases["torch_2"]["seconds_per_genome"] / phases["search_8"]["end_to_end_seconds"])


@pytest.mark.slow
def test_torch_peer_has_the_parameters_of_each_standalone_model_and_trains(monkeypatch):
    """The benchmark's PyTorch peer builds the same layers as `TextClassifier` (recurrences aside, whose biases
    differ by design), so it does the same matmuls."""
    pytest.importorskip("torch", reason="the PyTorch peer needs the bench extra: pip install -e '.[bench]'")
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    torch_models = load_experiment("torch_models")
    space = text_classifier_space(max_blocks=3, ops=("attention", "conv5", "gated_mlp"), widths=(16,))
    model = PopulationModel(space, vocab_size=20, max_length=12, num_classes=3)
    archs = [Architecture.from_genome(space, genome) for genome in np.asarray(space.sample(jax.random.key(0), 8))]
    for arch in archs:
        peer = torch_models.TextClassifier(arch.to_dict(), 20, 12, 3)
        assert sum(p.numel() for p in peer.parameters()) == count_params(model.standalone_shapes(arch)), arch

    tokens = np.random.default_rng(0).integers(1, 20, (32, 12)).astype(np.int32)
    labels = tokens[:, 0] % 3
    result = torch_models.train_loop([a.to_dict() for a in archs[:2]], tokens, labels, vocab_size=20,
                                     num_classes=3, batch_size=8, steps=3, threads=1, validation=(tokens, labels))
    assert len(result["final_losses"]) == 2 and np.all(np.isfinite(result["final_losses"]))
    assert len(result["validation_accuracies"]) == 2 and all(0 <= a <= 1 for a in result["validation_accuracies"])

    # Scoring reads the whole split whatever the batch size, with dropout off.
    peer = torch_models.TextClassifier(archs[0].to_dict(), 20, 12, 3)
    as_tensors = (torch_models.torch.from_numpy(tokens).long(), torch_models.torch.from_numpy(labels).long())
    assert torch_models.evaluate(peer, *as_tensors, 5) == pytest.approx(torch_models.evaluate(peer, *as_tensors, 256))
    assert peer.training


def test_grouped_form_executes_at_most_three_times_the_useful_flops(monkeypatch, record_property):
    """The CPU proxy of the accelerator path: one train step of P = 32 different genomes of the benchmark's mid
    set, every member side by side in the grouped form, executes at most 3x the matmul FLOPs their exact-size
    models need (widths, kernel sizes and expansions are zero-padded within a tile, so it is above 1). The
    nested batched switches it replaced executed 79.5x (experiments/README.md)."""
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    proxy = load_experiment("population_proxy")
    cost = proxy.step_cost(32, "grouped")
    record_property("summary", f"grouped form, P = 32 mid genomes: executed/useful matmul FLOPs "
                               f"{cost['executed_over_useful']:.3f}, {cost['ops_per_member_step']:.0f} primitive ops per "
                               "member-step")  # printed after the run by conftest.py, from whichever worker ran it
    assert 1 <= cost["executed_over_useful"] <= 3
