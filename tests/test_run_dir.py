"""A user's runs are never lost: checks before writes, no silent overwrite, a clean Ctrl-C."""

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
from helpers import TINY_SEARCH

from evonas import interrupts, run_dir
from evonas.cli import main
from evonas.errors import RunDirError

CONFIG = TINY_SEARCH


def snapshot(directory):
    return {str(p.relative_to(directory)): p.read_bytes() if p.is_file() else None for p in directory.rglob("*")}


def test_a_failure_before_the_first_checkpoint_leaves_no_directory(tmp_path):
    out = tmp_path / "new" / "deeper" / "run"
    with pytest.raises(KeyboardInterrupt), run_dir.created(out):
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == [], "the run directory and the parents made for it are gone"


def test_overwrite_replaces_whole_and_a_failed_replacement_puts_the_old_run_back(tmp_path):
    out = tmp_path / "run"
    (out / "retrain" / "model").mkdir(parents=True)
    (out / "summary.json").write_text("old")
    before = snapshot(out)
    with pytest.raises(RuntimeError), run_dir.created(out, overwrite=True):
        assert list(out.iterdir()) == []
        (out / "config.json").write_text("new")
        raise RuntimeError("the new search failed")
    assert snapshot(out) == before and [p.name for p in tmp_path.iterdir()] == ["run"]

    with run_dir.created(out, overwrite=True):
        (out / "config.json").write_text("new")
    assert snapshot(out) == {"config.json": b"new"}, "nothing of the old run is left beside the new one"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_an_out_holding_anything_is_refused_without_overwrite(tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="holds files; choose another directory"):
        run_dir.check_new(tmp_path)
    run_dir.check_new(tmp_path, overwrite=True)
    run_dir.check_new(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    run_dir.check_new(tmp_path / "empty")
    monkeypatch.chdir(tmp_path / "empty")
    with pytest.raises(RunDirError, match="holds the current directory"):
        run_dir.check_new(tmp_path, overwrite=True)


@pytest.fixture(scope="module")
def env():
    # The suite's compilation cache (tests/conftest.py), which tests/test_resume.py shares. PYTHONFAULTHANDLER: a
    # search that hangs prints where each thread is when sent SIGABRT.
    return {**os.environ, "PYTHONFAULTHANDLER": "1"}


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    path.write_text(json.dumps(CONFIG))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory, env, config_file):
    """A search that ran to its end, as its own `evonas` process."""
    out = tmp_path_factory.mktemp("finished") / "run"
    subprocess.run([sys.executable, "-m", "evonas.cli", "search", "--config", str(config_file), "--out", str(out),
                    "--quiet"], env=env, check=True, capture_output=True, timeout=600)
    return out


@pytest.mark.slow
def test_a_typo_on_the_out_of_a_finished_run_leaves_it_byte_identical(finished, config_file, capsys):
    before = snapshot(finished)
    for typo in (["--mutation-rate", "10"], ["--config", str(config_file)], ["--batch-size", "-1"], ["--seed", "1"],
                 ["--config", str(finished / "history.jsonl")]):
        assert main(["search", "--out", str(finished), *typo, "--quiet"]) == 2
        assert len(capsys.readouterr().err.splitlines()) == 1
    assert snapshot(finished) == before
    assert main(["search", "--resume", str(finished)]) == 0, "the run is still whole"


@pytest.mark.slow
def test_overwrite_replaces_a_finished_run_whole(finished, config_file, tmp_path, capsys):
    out = tmp_path / "run"
    subprocess.run(["cp", "-r", str(finished), str(out)], check=True)
    (out / "retrain" / "model").mkdir(parents=True)  # an old run's export, which predict would pick up
    assert main(["search", "--out", str(out), "--config", str(config_file), "--children", "4", "--quiet"]) == 2
    assert "holds a finished search run" in capsys.readouterr().err
    assert main(["search", "--out", str(out), "--config", str(config_file), "--children", "4", "--quiet",
                 "--overwrite"]) == 0
    assert not (out / "retrain").exists()
    assert json.loads((out / "summary.json").read_text())["children"] == 4


# `evonas` with Python's own SIGINT handler, as a command typed in a terminal has it (a test runner started in the
# background passes SIGINT on ignored, and a search keeps ignoring it).
_CTRL_C_AS_IN_A_TERMINAL = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                            "from evonas.cli import run; run(sys.argv[1:])")


@contextlib.contextmanager
def _sigint(handler):
    """SIGINT handled by `handler` inside, whatever the test runner was started with; restored after."""
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.slow
def test_ctrl_c_names_the_resume_command_which_finishes_the_run(finished, env, config_file, tmp_path):
    out = tmp_path / "run"
    search = subprocess.Popen([sys.executable, "-c", _CTRL_C_AS_IN_A_TERMINAL, "search", "--config", str(config_file),
                               "--out", str(out), "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    while not (out / "checkpoints" / "1").is_dir() and search.poll() is None:
        time.sleep(0.02)
    search.send_signal(signal.SIGINT)
    try:
        _, stderr = search.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        search.send_signal(signal.SIGABRT)  # the env's PYTHONFAULTHANDLER prints where each thread is
        pytest.fail(f"still running 120 s after Ctrl-C; its threads: {search.communicate()[1]}")
    assert search.returncode == 130, stderr
    assert "Traceback" not in stderr and len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("evonas search: interrupted after ") and " of 8 generations" in stderr
    command = stderr.split("continue with: ")[1].strip()
    assert command == f"evonas search --resume {shlex.quote(str(out.resolve()))}"

    argv = shlex.split(command)
    subprocess.run([sys.executable, "-m", "evonas.cli", *argv[1:], "--quiet"], env=env, check=True, timeout=600)
    assert (out / "history.jsonl").read_bytes() == (finished / "history.jsonl").read_bytes()


class _InterruptedWhileCollected:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)  # its KeyboardInterrupt is raised here, where Python only prints it


@_sigint(signal.default_int_handler)  # Python's own, as in a terminal
def test_a_ctrl_c_that_python_drops_in_a_destructor_is_raised_at_the_next_check(monkeypatch):
    printed = []
    monkeypatch.setattr(sys, "unraisablehook", printed.append)  # where Python reports what it drops
    with interrupts.remembered():
        obj = _InterruptedWhileCollected()
        del obj
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
    assert printed == [], "a dropped Ctrl-C is raised again, not printed"
    interrupts.check()  # outside, nothing is remembered
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert sys.unraisablehook == printed.append

    obj = _InterruptedWhileCollected()  # outside `remembered`, Python drops it as before
    del obj
    assert [type(p.exc_value) for p in printed] == [KeyboardInterrupt]
    interrupts.check()


@_sigint(signal.SIG_IGN)  # as under nohup, or in a script's background job
def test_ctrl_c_ignored_before_stays_ignored():
    with interrupts.remembered():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        interrupts.check()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
