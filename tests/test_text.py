"""Tests for evonas.text: word and byte tokenizers, their JSON form and the data-chosen length."""

import numpy as np
import pytest

from evonas import data, text

TEXTS = ["the cat sat .", "The dog sat !", "a cat , a dog", "the end"]


def _build(texts=TEXTS, **overrides):
    options = {"vocab_size": 100, "min_frequency": 1, "lowercase": False, "max_length": 8, "length_percentile": 100}
    return text.build_word_tokenizer(texts, **options | overrides)


def test_word_vocab_is_ordered_by_count_then_token():
    tokenizer = _build()
    assert tokenizer.vocab[:2] == ("<pad>", "<unk>")
    # "a", "cat", "dog", "sat", "the" occur twice; then the singletons alphabetically.
    assert tokenizer.vocab[2:] == ("a", "cat", "dog", "sat", "the", "!", ",", ".", "The", "end")


def test_word_vocab_does_not_depend_on_text_order():
    assert _build() == _build(TEXTS[::-1])


def test_vocab_size_and_min_frequency_limit_the_vocab():
    assert _build(vocab_size=4).vocab == ("<pad>", "<unk>", "a", "cat")
    assert _build(min_frequency=2).vocab == ("<pad>", "<unk>", "a", "cat", "dog", "sat", "the")
    assert _build(vocab_size=4).vocab_size == 4


def test_lowercase_merges_cases_here_and_at_encode_time():
    tokenizer = _build(lowercase=True)
    assert "The" not in tokenizer.vocab
    np.testing.assert_array_equal(tokenizer.encode(["THE CAT"]), tokenizer.encode(["the cat"]))


def test_encode_pads_truncates_and_maps_unknown_words():
    tokenizer = _build(max_length=4)
    ids = {token: index for index, token in enumerate(tokenizer.vocab)}
    rows = tokenizer.encode(["the cat", "the zebra", "a cat , a dog"])
    assert rows.dtype == np.int32 and rows.shape == (3, 4)
    np.testing.assert_array_equal(rows[0], [ids["the"], ids["cat"], data.PAD_ID, data.PAD_ID])
    np.testing.assert_array_equal(rows[1], [ids["the"], text.UNK_ID, data.PAD_ID, data.PAD_ID])
    np.testing.assert_array_equal(rows[2], [ids["a"], ids["cat"], ids[","], ids["a"]])


@pytest.mark.parametrize("kind", ["word", "byte"])
def test_text_without_tokens_encodes_as_one_unknown(kind):
    tokenizer = _build() if kind == "word" else text.byte_tokenizer(8)
    rows = tokenizer.encode(["", "   "] if kind == "word" else [""])
    np.testing.assert_array_equal(rows[:, 0], [text.UNK_ID] * len(rows))
    assert (rows[:, 1:] == data.PAD_ID).all()


def test_max_length_none_takes_the_percentile_of_training_lengths():
    texts = ["w " * n for n in range(1, 11)]  # 1..10 words
    assert _build(texts, max_length=None, length_percentile=100).max_length == 10
    assert _build(texts, max_length=None, length_percentile=50).max_length == 5
    assert _build(texts, max_length=None, length_percentile=90).max_length == 9
    assert _build(texts, max_length=None, length_percentile=91).max_length == 10
    assert _build(texts, max_length=None, length_percentile=1).max_length == 1


def test_byte_tokenizer_encodes_utf8_bytes_after_reserved_ids():
    tokenizer = text.byte_tokenizer(max_length=6)
    assert tokenizer.vocab_size == 258
    row = tokenizer.encode(["aé"])[0]
    expected = [byte + text.BYTE_OFFSET for byte in "aé".encode()]
    np.testing.assert_array_equal(row, expected + [data.PAD_ID] * 3)
    assert tokenizer.encode(["\xff" * 10]).max() < tokenizer.vocab_size


@pytest.mark.parametrize(
    "tokenizer, texts",
    [(_build(lowercase=True), TEXTS), (text.byte_tokenizer(5), TEXTS), (data.listops_tokenizer(), ["[SM 1 [MAX 2 3 ] ]"])],
)
def test_tokenizer_survives_a_json_file(tmp_path, tokenizer, texts):
    tokenizer.save(tmp_path / "tokenizer.json")
    loaded = text.Tokenizer.load(tmp_path / "tokenizer.json")
    assert loaded == tokenizer
    np.testing.assert_array_equal(loaded.encode(texts), tokenizer.encode(texts))


def test_from_json_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown tokenizer keys"):
        text.Tokenizer.from_json({"kind": "byte", "max_length": 4, "size": 3})


def test_listops_tokenizer_reproduces_listops_ids_and_rejects_unknown_tokens():
    task = data.listops_task(seed=0, num_train=20, num_validation=5, num_test=5)
    texts = [" ".join(task.vocab[i] for i in row if i != data.PAD_ID) for row in task.train.tokens]
    np.testing.assert_array_equal(task.tokenizer.encode(texts), task.train.tokens)
    with pytest.raises(ValueError, match="unknown token 'x'"):
        task.tokenizer.encode(["[MAX 1 x ]"])


@pytest.mark.parametrize(
    "kind, options, message",
    [
        ("spaces", {}, "unknown tokenizer kind"),
        ("word", {"vocab": ("a",)}, "must start with '<pad>'"),
        ("byte", {"max_length": 0}, "max_length"),
        ("byte", {"vocab": ("<pad>",)}, "no vocabulary"),
    ],
)
def test_tokenizer_rejects_inconsistent_settings(kind, options, message):
    with pytest.raises(ValueError, match=message):
        text.Tokenizer(kind, **{"max_length": 4} | options)
