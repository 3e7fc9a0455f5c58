"""Sharding: a search split over 8 devices, or over 2 processes of 4 devices each, is the 1-device search.

Each search runs as its own `evonas` process, since the device count is fixed when JAX starts. The
whole history is compared. Over any number of devices above one, every record is equal to the bit. On
one device XLA compiles the program without SPMD partitioning, through another pipeline, and some losses
differ in their last bit: there, genomes, parents and fitness must be equal and the losses equal to
float32 precision.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from evonas.population import Population
from evonas.sharding import balanced_order
from evonas.space import text_classifier_space
from evonas.supernet import PopulationModel

pytestmark = pytest.mark.slow  # every test runs searches in their own processes

SPACE = {"max_blocks": 2, "ops": ["identity", "attention", "conv3"], "activations": ["relu", "tanh"], "norms": ["none"],
         "widths": [16], "heads": [1], "ffn_expansions": [1], "dropouts": [0.0, 0.1], "positionals": ["none"],
         "poolings": ["mean", "last"], "learning_rates": [0.001, 0.01], "weight_decays": [0.0], "optimizers": ["adamw"]}
# 5 children per generation: not a multiple of 8 devices, so padding members are exercised too.
CONFIG = {"space": SPACE, "num_children": 10, "children_per_generation": 5, "population_size": 5, "sample_size": 2,
          "steps": 4, "steps_per_call": 2, "batch_size": 8}


def evonas(env, *args, devices=1):
    env = {**env, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    return subprocess.Popen([sys.executable, "-m", "evonas.cli", "search", "--quiet", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process):
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


def history(run_dir):
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "config.json"
    path.write_text(json.dumps(CONFIG))
    return path


@pytest.fixture(scope="module")
def one_device(tmp_path_factory, config_file):
    out = tmp_path_factory.mktemp("one_device")
    finish(evonas(os.environ, "--config", str(config_file), "--out", str(out)))
    return history(out)


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory, config_file):
    out = tmp_path_factory.mktemp("eight_devices")
    finish(evonas(os.environ, "--config", str(config_file), "--out", str(out), devices=8))
    return history(out)


def test_search_over_eight_devices_equals_one_device(one_device, eight_devices):
    assert len({record["val_loss"] for record in one_device}) > 1  # members really differ
    assert len(eight_devices) == len(one_device)
    for sharded, single in zip(eight_devices, one_device, strict=True):
        losses = ("val_loss", "train_loss")
        assert {k: v for k, v in sharded.items() if k not in losses} == {k: v for k, v in single.items()
                                                                         if k not in losses}
        assert [sharded[k] for k in losses] == pytest.approx([single[k] for k in losses], rel=1e-6)


def test_search_over_two_devices_equals_eight_to_the_bit(tmp_path, config_file, eight_devices):
    finish(evonas(os.environ, "--config", str(config_file), "--out", str(tmp_path), devices=2))
    assert history(tmp_path) == eight_devices


def test_two_processes_run_one_search_equal_to_one_process(tmp_path, config_file, eight_devices):
    """2 processes of 4 devices each against one process of the same 8 devices."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    processes = [
        evonas(os.environ, "--config", str(config_file), "--out", str(tmp_path / f"process{i}"),
               "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i), devices=4)
        for i in range(2)
    ]
    for process in processes:
        finish(process)
    assert history(tmp_path / "process0") == eight_devices
    assert history(tmp_path / "process1") == eight_devices


def device_count_after_import(**env):
    """The CPU device count a fresh process sees after `import evonas`, under these environment variables."""
    clean = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    code = "import evonas, jax; print(jax.device_count(), evonas.CPU_DEVICES)"
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env, "JAX_PLATFORMS": "cpu"},
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), out[1]


def test_evonas_gives_a_cpu_host_one_device_per_core_unless_a_count_is_set():
    cores = len(os.sched_getaffinity(0))
    assert device_count_after_import() == (cores, str(cores))
    assert device_count_after_import(JAX_NUM_CPU_DEVICES="3") == (3, "None")
    assert device_count_after_import(XLA_FLAGS="--xla_force_host_platform_device_count=5") == (5, "None")


def test_balanced_order_gives_each_device_as_many_members_and_about_the_same_work():
    costs = np.array([9.0, 1, 1, 1, 8, 2, 2, 7])  # contiguous halves: 12 against 19; best split: 14 against 17
    order = balanced_order(costs, num_devices=2)
    assert sorted(order) == list(range(8))
    assert sorted(costs[order].reshape(2, 4).sum(axis=1)) == [14, 17]
    assert (order == balanced_order(costs, num_devices=2)).all()
    assert sorted(balanced_order(costs, num_devices=8)) == list(range(8))


def test_arrange_places_members_within_each_chunk_and_its_order_puts_results_back():
    space = text_classifier_space(**SPACE)
    population = Population(PopulationModel(space, vocab_size=20, max_length=8, num_classes=3))
    genomes = np.asarray(space.sample(jax.random.key(0), 7))
    keys = jax.random.split(jax.random.key(1), 7)
    chunk = 2 * population.num_devices
    order, arranged_keys, arranged = population.arrange(keys, genomes, chunk)
    assert len(arranged) == -(-7 // chunk) * chunk  # whole chunks; padding repeats the last member
    for start in range(0, len(order), chunk):  # members stay in their chunk
        assert sorted(order[start:start + chunk]) == list(range(start, start + chunk))
    back = np.argsort(order)
    np.testing.assert_array_equal(arranged[back][:7], genomes)
    np.testing.assert_array_equal(jax.random.key_data(arranged_keys)[back][:7], jax.random.key_data(keys))
