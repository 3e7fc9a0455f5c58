"""Sharding: a search split over 8 devices, or over 2 processes of 4 devices each, is the 1-device search.

Each search runs as its own `evonas` process, since the device count is fixed when JAX starts. The
whole history is compared, so every member's genome, fitness, validation loss and train loss must agree.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

SPACE = {"max_blocks": 2, "ops": ["identity", "attention", "conv3"], "activations": ["relu", "tanh"], "norms": ["none"],
         "widths": [16], "heads": [1, 2], "ffn_expansions": [1], "dropouts": [0.0, 0.1], "positionals": ["none"],
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


def test_search_over_eight_devices_equals_one_device(tmp_path, config_file, one_device):
    finish(evonas(os.environ, "--config", str(config_file), "--out", str(tmp_path), devices=8))
    assert history(tmp_path) == one_device
    assert len({record["val_loss"] for record in one_device}) > 1  # members really differ


def test_two_processes_run_one_search_equal_to_one_process(tmp_path, config_file, one_device):
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
    assert history(tmp_path / "process0") == one_device
    assert history(tmp_path / "process1") == one_device
