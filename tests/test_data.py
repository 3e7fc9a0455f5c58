"""Tests for evonas.data: the TextSplit/TextTask containers and the generated ListOps task."""

import statistics

import numpy as np
import pytest

from evonas import data

SMALL = {"num_train": 300, "num_validation": 100, "num_test": 100}


@pytest.fixture(scope="module")
def task():
    return data.listops_task(seed=0, **SMALL)


def _splits(task):
    return {"train": task.train, "validation": task.validation, "test": task.test}


def _decode(task, row):
    return [task.vocab[token_id] for token_id in row if token_id != data.PAD_ID]


def _reference_value(tokens):
    """Recursive evaluator written apart from the module's, so labels are checked independently."""
    operations = {
        "[MAX": max,
        "[MIN": min,
        "[MED": statistics.median_low,
        "[SM": lambda args: sum(args) % 10,
    }

    def parse(start):
        token = tokens[start]
        if token.isdigit():
            return int(token), start + 1
        args, position = [], start + 1
        while tokens[position] != "]":
            value, position = parse(position)
            args.append(value)
        return operations[token](args), position + 1

    value, end = parse(0)
    assert end == len(tokens), f"trailing tokens in {tokens}"
    return value


def _depth(tokens):
    depth = deepest = 0
    for token in tokens:
        depth += token.startswith("[") - (token == "]")
        deepest = max(deepest, depth)
    return deepest


def test_listops_vocab_starts_with_pad(task):
    assert data.PAD_ID == 0
    assert task.vocab[data.PAD_ID] == "<pad>"
    assert len(set(task.vocab)) == task.vocab_size == 16
    assert {"[MAX", "[MIN", "[MED", "[SM", "]", *map(str, range(10))} < set(task.vocab)


def test_listops_task_reports_its_shape(task):
    assert task.name == "listops"
    assert task.num_classes == 10
    assert task.max_length == 64
    assert [len(split) for split in _splits(task).values()] == [300, 100, 100]
    for split in _splits(task).values():
        assert split.tokens.dtype == np.int32 and split.labels.dtype == np.int32


def test_listops_is_deterministic_for_a_seed(task):
    again = data.listops_task(seed=0, **SMALL)
    for name, split in _splits(task).items():
        other = getattr(again, name)
        assert split.tokens.tobytes() == other.tokens.tobytes(), name
        assert split.labels.tobytes() == other.labels.tobytes(), name


def test_listops_differs_between_seeds(task):
    other = data.listops_task(seed=1, **SMALL)
    for name, split in _splits(task).items():
        assert not np.array_equal(split.tokens, getattr(other, name).tokens), name


def test_listops_each_split_draws_from_its_own_stream(task):
    # Resizing one split leaves the others in place: cross-split collisions are negligible here.
    resized = data.listops_task(seed=0, num_train=200, num_validation=150, num_test=100)
    np.testing.assert_array_equal(resized.train.tokens, task.train.tokens[:200])
    np.testing.assert_array_equal(resized.validation.tokens[:100], task.validation.tokens)
    np.testing.assert_array_equal(resized.test.tokens, task.test.tokens)


def test_listops_labels_match_the_expression_value(task):
    for name, split in _splits(task).items():
        for row, label in zip(split.tokens, split.labels):
            tokens = _decode(task, row)
            assert _reference_value(tokens) == label, (name, " ".join(tokens))


def test_listops_fits_max_length_and_pads_with_zero():
    short = data.listops_task(seed=3, num_train=200, num_validation=50, num_test=50, max_length=24)
    for split in _splits(short).values():
        assert split.tokens.shape == (len(split), 24)
        lengths = split.mask.sum(axis=1)
        # Real tokens form a prefix: everything after the first pad is pad.
        np.testing.assert_array_equal(split.mask, np.arange(24) < lengths[:, None])
        # Not truncated: each expression closes all of its brackets.
        for row, length in zip(split.tokens, lengths):
            tokens = [short.vocab[token_id] for token_id in row[:length]]
            assert tokens[-1] == "]" and _depth(tokens) > 0
            assert sum(t.startswith("[") for t in tokens) == tokens.count("]")


def test_listops_mask_marks_non_padding(task):
    np.testing.assert_array_equal(task.train.mask, task.train.tokens != data.PAD_ID)
    assert task.train.mask.dtype == bool


def test_listops_splits_share_no_expression(task):
    # Depth 1 with two arguments has only 400 expressions, so 350 draws would surely repeat some.
    crowded = data.listops_task(
        num_train=150, num_validation=100, num_test=100, max_depth=1, max_args=2
    )
    for checked in (task, crowded):
        rows = [row.tobytes() for split in _splits(checked).values() for row in split.tokens]
        assert len(set(rows)) == len(rows)


def test_listops_nests_at_least_twice_and_at_most_max_depth(task):
    depths = {_depth(_decode(task, row)) for row in task.train.tokens}
    assert depths == {2, 3}
    shallow = data.listops_task(seed=0, num_train=50, num_validation=10, num_test=10, max_depth=1)
    assert {_depth(_decode(shallow, row)) for row in shallow.train.tokens} == {1}


def test_listops_labels_are_not_dominated_by_one_class(task):
    counts = np.bincount(task.train.labels, minlength=10)
    majority = counts.max() / counts.sum()
    assert majority < 0.4, f"majority class is {majority:.1%} of train labels: {counts}"
    assert (counts > 0).all(), f"some class never occurs: {counts}"


@pytest.mark.parametrize(
    "tokens, value",
    [
        ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
        ("[MED 3 1 4 2 ]", 2),
        ("[MED 5 1 3 ]", 3),
        ("[SM 9 8 [SM 7 7 ] ]", 1),
        ("[MIN [MAX 1 2 ] [MED 8 6 ] ]", 2),
    ],
)
def test_evaluate_listops_computes_known_values(tokens, value):
    assert data.evaluate_listops(tokens.split()) == value


@pytest.mark.parametrize("tokens", ["[MAX 1 2", "[MAX 1 2 ] ]", "[SM ]", "1 2", "[MAX 1 x ]", ""])
def test_evaluate_listops_rejects_malformed_expressions(tokens):
    with pytest.raises(ValueError):
        data.evaluate_listops(tokens.split())


def test_listops_rejects_settings_that_cannot_fit():
    with pytest.raises(ValueError, match="shortest"):
        data.listops_task(max_length=6)
    with pytest.raises(ValueError, match="distinct"):
        # Only 4 operators x 100 digit pairs exist at depth 1 with two arguments.
        data.listops_task(num_train=500, num_validation=0, num_test=0, max_depth=1, max_args=2)


def test_text_split_rejects_mismatched_labels():
    with pytest.raises(ValueError):
        data.TextSplit(tokens=np.zeros((3, 5), np.int32), labels=np.zeros(4, np.int32))
