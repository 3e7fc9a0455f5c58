"""TensorBoard scalars, generation times and the progress bar's text of a running search."""

import itertools
import json
import struct

import numpy as np
import pytest
from helpers import SMALL_SPACE
from tensorboardX.proto.event_pb2 import Event, SessionLog

from evonas.monitor import GENERATIONS, TENSORBOARD, GenerationMonitor, diversity, format_seconds
from evonas.search import SearchConfig, run_search

CONFIG = SearchConfig(num_children=12, children_per_generation=4, population_size=6, sample_size=2, steps=10,
                      steps_per_call=5, space=SMALL_SPACE)
TAGS = ("fitness/best_so_far", "population/best", "population/median", "population/worst", "population/diversity",
        "progress/train_steps", "progress/seconds", "progress/generation_seconds", "progress/compilations")


def read_events(directory):
    """Every event in the TFRecord files of `directory`, read with the record framing and the Event protobuf."""
    events = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            events.append(Event.FromString(data[offset + 12:offset + 12 + length]))
            offset += 12 + length + 4  # length, its crc, the record, its crc
    return events


def scalars(directory):
    """{tag: [(step, value), ...]} of every scalar in `directory`'s event files."""
    found = {}
    for event in read_events(directory):
        for value in event.summary.value:
            found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run_search(CONFIG, out, progress=False)
    return out


def test_event_file_holds_every_scalar_of_every_generation(run_dir):
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    found = scalars(run_dir / TENSORBOARD)
    assert list((run_dir / TENSORBOARD).glob("events.out.tfevents.*")), "an event file in the run directory"
    for tag in TAGS:
        assert [step for step, _ in found[tag]] == [4, 8, 12], tag
    for step, value in found["fitness/best_so_far"]:
        assert value == pytest.approx(max(r["fitness"] for r in history[:step] if not r["diverged"]))
    for step, value in found["population/median"]:
        living = [r["fitness"] for r in history[max(0, step - 6):step] if not r["diverged"]]
        assert value == pytest.approx(np.median(living))
    for step, value in found["population/worst"]:
        assert value == pytest.approx(min(r["fitness"] for r in history[max(0, step - 6):step] if not r["diverged"]))
    assert [v for _, v in found["progress/train_steps"]] == [40, 80, 120]
    seconds = [v for _, v in found["progress/seconds"]]
    assert seconds == sorted(seconds) and seconds[0] > 0
    generations = [json.loads(line) for line in (run_dir / GENERATIONS).read_text().splitlines()]
    assert [g["children"] for g in generations] == [4, 8, 12]
    assert seconds == pytest.approx([g["wall_seconds"] for g in generations])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert generations[-1]["compilations"] == summary["compilations"]


def test_diversity_is_the_mean_pairwise_fraction_of_differing_genes():
    genomes = np.random.default_rng(0).integers(0, 3, (7, 5))
    pairs = list(itertools.combinations(genomes, 2))
    assert diversity(genomes) == pytest.approx(np.mean([np.mean(a != b) for a, b in pairs]))
    assert diversity(np.zeros((4, 5), int)) == 0.0
    assert diversity(genomes[:1]) == 0.0


def fake_history(num_children, first_id=0):
    return [{"id": i, "generation": i // 2, "genome": [i % 3, 0], "fitness": i / 10, "val_accuracy": i / 10,
             "diverged": False} for i in range(first_id, num_children)]


def test_resumed_monitor_drops_the_later_generations_of_an_earlier_session(tmp_path):
    first = GenerationMonitor(tmp_path, population_size=4, steps=10, num_generations=3, done_generations=0)
    for generation in range(3):
        first.record(generation, fake_history(2 * generation + 2), wall_seconds=generation + 1.0, compilations=3)
    first.close()
    resumed = GenerationMonitor(tmp_path, population_size=4, steps=10, num_generations=3, done_generations=1)
    assert [json.loads(line)["generation"] for line in (tmp_path / GENERATIONS).read_text().splitlines()] == [0]
    resumed.record(1, fake_history(4), wall_seconds=np.float64(2.5), compilations=np.int64(3))  # as restored
    resumed.close()
    lines = [json.loads(line) for line in (tmp_path / GENERATIONS).read_text().splitlines()]
    assert [(g["generation"], g["wall_seconds"]) for g in lines] == [(0, 1.0), (1, 2.5)]
    starts = [e.step for e in read_events(tmp_path / TENSORBOARD) if e.session_log.status == SessionLog.START]
    assert starts == [3], "TensorBoard hides the first session's events after generation 0's step (2 children)"
    generation_seconds = scalars(tmp_path / TENSORBOARD)["progress/generation_seconds"]
    assert generation_seconds[-1] == (4, pytest.approx(1.5))


def test_fresh_run_replaces_an_earlier_runs_events(tmp_path):
    for _ in range(2):
        monitor = GenerationMonitor(tmp_path, population_size=4, steps=10, num_generations=1, done_generations=0)
        monitor.record(0, fake_history(2), wall_seconds=1.0, compilations=1)
        monitor.close()
    assert len(list((tmp_path / TENSORBOARD).glob("events.out.tfevents.*"))) == 1
    assert len((tmp_path / GENERATIONS).read_text().splitlines()) == 1


def test_progress_bar_shows_best_accuracy_and_time_left(tmp_path, monkeypatch):
    clock = iter([100.0, 110.0, 130.0])  # the monitor starts, then generations 0 and 1 end
    monkeypatch.setattr("evonas.monitor.time.perf_counter", lambda: next(clock))
    monitor = GenerationMonitor(tmp_path, population_size=4, steps=10, num_generations=5, done_generations=0)
    assert monitor.postfix() == {}
    monitor.record(0, fake_history(2), wall_seconds=10.0, compilations=1)
    assert monitor.postfix() == {"best_val_accuracy": "0.100", "left": "0m40s"}  # 4 generations of 10 s
    monitor.record(1, fake_history(4), wall_seconds=30.0, compilations=1)
    assert monitor.postfix() == {"best_val_accuracy": "0.300", "left": "0m45s"}  # 3 generations of 15 s
    monitor.close()


def test_format_seconds():
    assert format_seconds(5) == "0m05s"
    assert format_seconds(125.4) == "2m05s"
    assert format_seconds(3 * 3600 + 61) == "3h01m"
