"""Preemption: a search killed with SIGKILL at any point and resumed writes the history of a run that never stopped.

Every search here runs as its own `evonas` process, as a preempted job would. They share the suite's persistent
compilation cache, so only the first one pays for compiling.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from helpers import TINY_SEARCH

from evonas.cli import main

pytestmark = pytest.mark.slow  # every test runs searches in their own processes

CONFIG = TINY_SEARCH
LINES_PER_GENERATION = CONFIG["children_per_generation"]

# Runs `evonas` and SIGKILLs itself at the Nth checkpoint this process writes, at a named point:
# "before-checkpoint" (the generation's history lines are written, its checkpoint is not) or
# "inside-checkpoint" (orbax has written every file of it, but not yet renamed the directory that commits it).
KILLING_EVONAS = """
import os, signal, sys
import orbax.checkpoint as ocp
from evonas import checkpoint
from evonas.cli import main

point, count = sys.argv[1], int(sys.argv[2])
checkpoints_written = []

def count_and_maybe_die():
    checkpoints_written.append(None)
    if len(checkpoints_written) == count:
        os.kill(os.getpid(), signal.SIGKILL)

if point == "before-checkpoint":
    save = checkpoint.Checkpoints.save
    def save_or_die(self, progress):
        count_and_maybe_die()
        save(self, progress)
    checkpoint.Checkpoints.save = save_or_die
else:
    paths = ocp.path.atomicity.AtomicRenameTemporaryPath
    finalize = paths.finalize
    async def finalize_or_die(self):
        if self.get_final().parent.name == "checkpoints":  # the step directory, not an item inside it
            count_and_maybe_die()
        await finalize(self)
    paths.finalize = finalize_or_die
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def env():
    return dict(os.environ)  # the suite's compilation cache (tests/conftest.py), which tests/test_run_dir.py shares


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    path.write_text(json.dumps(CONFIG))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env, config_file):
    """A run that was never stopped."""
    out = tmp_path_factory.mktemp("reference")
    evonas(env, "search", "--config", str(config_file), "--out", str(out))
    return out


def evonas(env, *args, kill_at=None):
    """Runs `evonas ARGS --quiet` to the end (or to its death at `kill_at`); returns the finished process."""
    prefix = ["-c", KILLING_EVONAS, *map(str, kill_at)] if kill_at else ["-m", "evonas.cli"]
    process = subprocess.run([sys.executable, *prefix, *args, "--quiet"], env=env, capture_output=True, text=True,
                             timeout=600, check=False)
    assert process.returncode == (-signal.SIGKILL if kill_at else 0), process.stderr
    return process


def history_lines(run_dir):
    path = run_dir / "history.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def checkpoint_steps(run_dir):
    return sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


def temporary_checkpoints(run_dir):
    return [p.name for p in (run_dir / "checkpoints").iterdir() if "tmp" in p.name]


def without_timings(summary_path):
    summary = json.loads(summary_path.read_text())
    return {k: v for k, v in summary.items() if k not in ("wall_seconds", "compilations")}


def test_search_killed_at_any_point_resumes_to_the_same_history(reference, env, config_file, tmp_path):
    run = tmp_path / "run"
    started = subprocess.Popen([sys.executable, "-m", "evonas.cli", "search", "--config", str(config_file), "--out",
                                str(run), "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while history_lines(run) < LINES_PER_GENERATION and started.poll() is None:
        time.sleep(0.02)
    started.send_signal(signal.SIGKILL)  # from outside, wherever the search is after its first generation
    assert started.wait() == -signal.SIGKILL

    evonas(env, "search", "--resume", str(run), kill_at=("before-checkpoint", 2))
    assert history_lines(run) > LINES_PER_GENERATION * max(checkpoint_steps(run)), "lines no checkpoint covers"

    evonas(env, "search", "--resume", str(run), kill_at=("inside-checkpoint", 1))
    assert temporary_checkpoints(run), "a checkpoint written but never committed"

    evonas(env, "search", "--resume", str(run))
    assert (run / "history.jsonl").read_bytes() == (reference / "history.jsonl").read_bytes()
    assert without_timings(run / "summary.json") == without_timings(reference / "summary.json")
    assert not temporary_checkpoints(run)


def test_search_with_inheritance_killed_and_resumed_gives_the_same_history(reference, env, config_file, tmp_path):
    """With --inherit, the living members' parameters are checkpointed: a search killed before a checkpoint and
    resumed writes the history of one never stopped. Its bred children inherit, which changes their training."""
    whole, run = tmp_path / "whole", tmp_path / "run"
    evonas(env, "search", "--config", str(config_file), "--out", str(whole), "--inherit")
    evonas(env, "search", "--config", str(config_file), "--out", str(run), "--inherit", kill_at=("before-checkpoint", 4))
    assert max(checkpoint_steps(run)) == 2, "killed after 3 generations, before the third's checkpoint"
    evonas(env, "search", "--resume", str(run))
    assert (run / "history.jsonl").read_bytes() == (whole / "history.jsonl").read_bytes()
    records = [json.loads(line) for line in (whole / "history.jsonl").read_text().splitlines()]
    assert all(r["inherited"] == 0 for r in records if not r["parents"])
    assert max(r["inherited"] for r in records) == 1.0  # a child that changed only its learning rate keeps all
    plain = [json.loads(line) for line in (reference / "history.jsonl").read_text().splitlines()]
    assert [r["genome"] for r in plain[:4]] == [r["genome"] for r in records[:4]]  # the same random first children
    assert [r["train_loss"] for r in plain] != [r["train_loss"] for r in records]


def garble_every_file(step_dir, damage):
    for path in step_dir.rglob("*"):
        if path.is_file():
            path.write_bytes(damage(path.read_bytes()))


def flip_middle_byte(data):
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:] if data else data


def test_damaged_newest_checkpoint_is_named_and_the_previous_one_used(reference, env, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / "summary.json").unlink()  # as if killed after the last checkpoint, before the summary
    previous, newest = checkpoint_steps(run)
    garble_every_file(run / "checkpoints" / str(newest), flip_middle_byte)

    process = evonas(env, "search", "--resume", str(run))
    assert f"checkpoint {run / 'checkpoints' / str(newest)} is damaged" in process.stderr
    assert (run / "history.jsonl").read_bytes() == (reference / "history.jsonl").read_bytes()
    assert without_timings(run / "summary.json") == without_timings(reference / "summary.json")
    assert checkpoint_steps(run) == [previous, newest], "the damaged checkpoint is written again"


def test_no_usable_checkpoint_is_a_clear_error(reference, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / "summary.json").unlink()
    for step in checkpoint_steps(run):
        garble_every_file(run / "checkpoints" / str(step), lambda data: data[: len(data) // 2])  # partly written

    with pytest.warns(UserWarning, match="is damaged"):
        assert main(["search", "--resume", str(run), "--quiet"]) == 2
    assert f"no usable checkpoint in {run / 'checkpoints'}" in capsys.readouterr().err


def test_resume_rejects_options_that_differ_from_the_run(reference, capsys):
    assert main(["search", "--resume", str(reference), "--seed", "1", "--population", "4"]) == 2
    error = capsys.readouterr().err
    assert "seed=1 (the run has 0)" in error and "population" not in error


def test_resuming_a_finished_run_changes_nothing(reference, capsys):
    before = {p: p.read_bytes() for p in reference.rglob("*") if p.is_file()}
    assert main(["search", "--resume", str(reference)]) == 0
    assert "already finished" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in reference.rglob("*") if p.is_file()} == before


def test_a_run_saved_by_an_older_evonas_is_named_not_resumed_with_new_defaults(reference, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    saved = json.loads((run / "config.json").read_text())
    del saved["config"]["listops"]  # a field evonas gained after such a run: today's default task may differ
    (run / "config.json").write_text(json.dumps(saved))
    (run / "summary.json").unlink()

    assert main(["search", "--resume", str(run)]) == 2
    assert f"{run / 'config.json'} has no listops: it was written by an older evonas" in capsys.readouterr().err
    assert main(["retrain", str(run), "--quiet"]) == 2
    assert "has no listops" in capsys.readouterr().err


def test_search_with_the_predictor_killed_resumes_to_the_same_history(env, tmp_path):
    """The predictor is refitted from history.jsonl each generation, so a resumed run ranks exactly as one that
    never stopped (killed after a ranked generation's lines, before its checkpoint)."""
    config = tmp_path / "predictor.json"
    config.write_text(json.dumps({**CONFIG, "num_children": 10, "predictor_pool": 3, "predictor_min_records": 4}))
    reference, run = tmp_path / "reference", tmp_path / "run"
    evonas(env, "search", "--config", str(config), "--out", str(reference))
    evonas(env, "search", "--config", str(config), "--out", str(run), kill_at=("before-checkpoint", 5))
    assert history_lines(run) == 4 * LINES_PER_GENERATION and max(checkpoint_steps(run)) == 3

    evonas(env, "search", "--resume", str(run))
    assert (run / "history.jsonl").read_bytes() == (reference / "history.jsonl").read_bytes()
    assert "predicted_fitness" in (reference / "history.jsonl").read_text().splitlines()[-1]
    assert without_timings(run / "summary.json") == without_timings(reference / "summary.json")
