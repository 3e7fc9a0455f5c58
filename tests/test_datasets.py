"""Tests for evonas.text_files and evonas.datasets: users' files become TFDS datasets, TFDS datasets become tasks."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from evonas import data, datasets, phrases, text
from evonas.cli import main
from evonas.data import DatasetError
from evonas.text_files import import_files, label_names

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _write(path: Path, content: str | bytes) -> str:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


def _read_back(directory: Path) -> dict[str, list[tuple[str, str]]]:
    """split -> sorted (text, label name) pairs, read with tfds.builder_from_directory."""
    builder = tfds.builder_from_directory(str(directory))
    names = builder.info.features["label"].names
    return {
        split: sorted((r["text"].decode(), names[r["label"]]) for r in source.__getitems__(range(len(source))))
        for split, source in builder.as_data_source().items()
    }


# --- Importing files ----------------------------------------------------------------------------


def test_tsv_with_header_becomes_a_tfds_dataset(tmp_path):
    train = _write(tmp_path / "train.tsv", 'sentence\tlabel\na "fine" film \t1\na dull film \t0\nso bad\t0\n')
    test = _write(tmp_path / "dev.tsv", "sentence\tlabel\ngreat\t1\n")
    path = import_files("toy", tmp_path / "tfds", {"train": [train], "test": [test]}, file_format="tsv",
                        text_columns=["sentence"], label_column="label")
    builder = tfds.builder_from_directory(str(path))
    assert isinstance(builder.info.features["text"], tfds.features.Text)
    assert builder.info.features["label"].names == ["0", "1"]
    assert _read_back(path) == {
        "train": [('a "fine" film', "1"), ("a dull film", "0"), ("so bad", "0")],
        "test": [("great", "1")],
    }


def test_import_is_readable_by_data_source_without_download(tmp_path):
    train = _write(tmp_path / "t.tsv", "text\tlabel\nyes\tpos\nno\tneg\n")
    import_files("toy", tmp_path, {"train": [train]}, file_format="tsv", text_columns=["text"], label_column="label")
    source = tfds.data_source("toy", data_dir=str(tmp_path), download=False)
    assert sorted(record["label"] for record in source["train"]) == [0, 1]


def test_csv_without_header_takes_columns_by_index_and_joins_text_columns(tmp_path):
    train = _write(tmp_path / "t.csv", '"3","Title, with comma","Body ""quoted"""\n"1","Other","Second body"\n')
    path = import_files("news", tmp_path / "tfds", {"train": [train]}, file_format="csv",
                        text_columns=["1", "2"], label_column="0", header=False)
    assert _read_back(path)["train"] == [('Other Second body', "1"), ('Title, with comma Body "quoted"', "3")]


def test_jsonl_takes_keys_and_integer_or_string_labels(tmp_path):
    lines = [{"review": "good", "stars": 5}, {"review": "bad", "stars": 1}, {"review": "okay", "stars": "3"}]
    train = _write(tmp_path / "t.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n\n")
    path = import_files("stars", tmp_path / "tfds", {"train": [train]}, file_format="jsonl",
                        text_columns=["review"], label_column="stars")
    assert _read_back(path)["train"] == [("bad", "1"), ("good", "5"), ("okay", "3")]
    assert tfds.builder_from_directory(str(path)).info.features["label"].names == ["1", "3", "5"]


def test_lines_per_label_decode_cp1252_and_split_only_at_newline(tmp_path):
    # 0x85 is "…" in cp1252; decoded as latin-1 it would be U+0085, a line break to str.splitlines().
    negative = _write(tmp_path / "neg", b"caf\xe9 was dull\x85 really\r\nboring\n")
    positive = _write(tmp_path / "pos", b"a joy\n")
    path = import_files("mr_toy", tmp_path / "tfds", {"train": [f"neg={negative}", f"pos={positive}"]},
                        file_format="lines", encoding="cp1252")
    assert _read_back(path)["train"] == [("a joy", "pos"), ("boring", "neg"), ("café was dull… really", "neg")]


def test_label_names_sort_integers_numerically():
    assert label_names(["10", "9", "-1"]) == ("-1", "9", "10")
    assert label_names(["pos", "neg", "10"]) == ("10", "neg", "pos")


def test_empty_texts_are_dropped_and_counted(tmp_path, caplog):
    train = _write(tmp_path / "t.tsv", "text\tlabel\n \t0\nfine\t1\n\t1\nok\t0\n")
    with caplog.at_level(logging.WARNING, logger="evonas"):
        path = import_files("toy", tmp_path / "tfds", {"train": [train]}, file_format="tsv",
                            text_columns=["text"], label_column="label")
    assert [row[0] for row in _read_back(path)["train"]] == ["fine", "ok"]
    assert "dropped 2 rows with empty text (lines 2, 4)" in caplog.text


@pytest.mark.parametrize(
    "content, options, message",
    [
        (b"text\tlabel\ngood\t1\nna\xefve\t0\n", {}, r"t\.tsv, line 3: bytes b'\\xef' are not valid utf-8"),
        (b"text\tlabel\ngood\t1\n", {"encoding": "klingon"}, "unknown encoding"),
        (b"", {}, "is empty"),
        (b"text\tlabel\n", {}, "has no rows with text"),
        (b"text\tlabel\n\t1\n", {}, "has no rows with text"),
        (b"text\tlabel\ngood\t1\nbad\t1\n", {}, "single class '1'"),
        (b"words\tlabel\ngood\t1\n", {}, r"no column 'text'; columns are \['words', 'label'\]"),
        (b"text\tlabel\ngood\n", {}, "line 2: 1 fields, but column 1 is needed"),
        (b"text\tlabel\ngood\t\n", {}, "line 2: empty label"),
        (b"good\t1\nbad\t0\n", {"header": False}, "give a 0-based index"),
    ],
)
def test_bad_files_get_clear_errors(tmp_path, content, options, message):
    train = _write(tmp_path / "t.tsv", content)
    with pytest.raises(DatasetError, match=message):
        import_files("toy", tmp_path / "tfds", {"train": [train]}, file_format="tsv",
                     **{"text_columns": ["text"], "label_column": "label"} | options)


def test_test_labels_must_occur_in_train(tmp_path):
    train = _write(tmp_path / "train.tsv", "text\tlabel\ngood\tpos\nbad\tneg\n")
    test = _write(tmp_path / "test.tsv", "text\tlabel\nmeh\tneutral\n")
    with pytest.raises(DatasetError, match=r"labels \['neutral'\] of the test files do not occur in train"):
        import_files("toy", tmp_path, {"train": [train], "test": [test]}, file_format="tsv",
                     text_columns=["text"], label_column="label")


@pytest.mark.parametrize(
    "file_format, content, message",
    [
        ("jsonl", '{"text": "good"}\n', r"line 1: no key 'label'; keys are \['text'\]"),
        ("jsonl", '{"text": "good", "label": 1}\n[1]\n', "line 2: a JSON object is needed"),
        ("jsonl", '{"text": "good", "label": 1.5}\n', "must be strings or integers"),
        ("jsonl", '{"text": "good",\n', "line 1: not JSON"),
        ("csv", 'text,label\n"good,1\n', "line 2: unexpected end of data"),
        ("lines", "good\n", "the lines format takes LABEL=FILE"),
    ],
)
def test_malformed_rows_name_their_line(tmp_path, file_format, content, message):
    train = _write(tmp_path / "t.txt", content)
    with pytest.raises(DatasetError, match=message):
        import_files("toy", tmp_path, {"train": [train]}, file_format=file_format,
                     text_columns=["text"], label_column="label")


def test_dataset_names_are_checked_and_imports_not_silently_replaced(tmp_path):
    train = _write(tmp_path / "t.tsv", "text\tlabel\nyes\tpos\nno\tneg\n")
    options = {"file_format": "tsv", "text_columns": ["text"], "label_column": "label"}
    with pytest.raises(DatasetError, match="snake_case"):
        import_files("My-Data", tmp_path, {"train": [train]}, **options)
    with pytest.raises(DatasetError, match="catalog name"):
        import_files("imdb_reviews", tmp_path, {"train": [train]}, **options)
    import_files("toy", tmp_path, {"train": [train]}, **options)
    with pytest.raises(DatasetError, match="already exists"):
        import_files("toy", tmp_path, {"train": [train]}, **options)
    _write(tmp_path / "t.tsv", "text\tlabel\nyes\tpos\nno\tneg\nmaybe\tneg\n")
    path = import_files("toy", tmp_path, {"train": [train]}, overwrite=True, **options)
    assert len(_read_back(path)["train"]) == 3


# --- Loading ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    """A dataset with train (20 per class) and a test split whose word "zebra" never occurs in train."""
    directory = tmp_path_factory.mktemp("tfds")
    rows = [f"good film number {i}\t1" for i in range(20)] + [f"bad film number {i}\t0" for i in range(20)]
    train = _write(directory / "train.tsv", "text\tlabel\n" + "\n".join(rows) + "\n")
    test = _write(directory / "test.tsv", "text\tlabel\ngood zebra\t1\nbad film\t0\n")
    import_files("toy", directory, {"train": [train], "test": [test]}, file_format="tsv",
                 text_columns=["text"], label_column="label")
    return directory


def test_load_text_task_finds_features_and_tokenizes_from_train_only(toy_dir):
    task = datasets.load_text_task("toy", toy_dir, min_frequency=1)
    assert task.label_names == ("0", "1") and task.num_classes == 2
    assert (len(task.train), len(task.validation), len(task.test)) == (36, 4, 2)
    assert "zebra" not in task.vocab and task.vocab_size == task.tokenizer.vocab_size
    assert text.UNK_ID in task.test.tokens[task.test.labels == 1]
    assert task.max_length == 4 and task.train.tokens.shape == (36, 4)
    np.testing.assert_array_equal(np.bincount(task.validation.labels), [2, 2])


def test_load_text_task_byte_mode_needs_no_vocabulary(toy_dir):
    task = datasets.load_text_task("toy", toy_dir, tokenizer="byte", max_length=12)
    assert task.vocab == () and task.vocab_size == 258 and task.max_length == 12


def test_search_config_with_a_dataset_loads_it(toy_dir):
    from evonas.search import SearchConfig, load_task

    task = load_task(SearchConfig(dataset="toy", data_dir=str(toy_dir), min_frequency=1, max_length=5))
    assert task.name == "toy" and task.max_length == 5 and task.label_names == ("0", "1")


def test_features_come_from_names_supervised_keys_or_uniqueness():
    features = tfds.features.FeaturesDict({
        "title": tfds.features.Text(), "body": tfds.features.Text(),
        "topic": tfds.features.ClassLabel(names=["a", "b"]), "idx": np.int32,
    })
    assert datasets.find_features(features, "title") == ("title", "topic")
    assert datasets.find_features(features, supervised_keys=("body", "topic")) == ("body", "topic")
    with pytest.raises(DatasetError, match=r"cannot tell the text feature among \['body', 'title'\]"):
        datasets.find_features(features)
    with pytest.raises(DatasetError, match="no ClassLabel feature 'idx'"):
        datasets.find_features(features, "title", "idx")


def _examples(labels):
    return [f"text {i}" for i in range(len(labels))], np.asarray(labels, np.int32)


def test_carve_is_deterministic_disjoint_and_stratified():
    examples = _examples([0] * 50 + [1] * 30 + [2] * 20)
    rest, carved = datasets.carve(examples, 0.1, np.random.default_rng(7))
    again_rest, again_carved = datasets.carve(examples, 0.1, np.random.default_rng(7))
    assert carved[0] == again_carved[0] and rest[0] == again_rest[0]
    assert not set(rest[0]) & set(carved[0]) and len(rest[0]) + len(carved[0]) == 100
    np.testing.assert_array_equal(np.bincount(carved[1]), [5, 3, 2])
    other = datasets.carve(examples, 0.1, np.random.default_rng(8))[1]
    assert other[0] != carved[0]


def test_sentence_groups_map_phrases_and_repeats_to_the_longest_line_that_holds_them():
    texts = ["a good film", "good", "a  good film indeed ", "film", "good", "bad", "goo", "", "bad"]
    np.testing.assert_array_equal(phrases.sentence_groups(texts), [2, 2, 2, 2, 2, 5, 6, 7, 5])


def test_carve_takes_whole_sentences_and_trains_on_none_of_their_phrases():
    sentences = [f"film {i} was {'good' if i % 3 else 'bad'} and long" for i in range(60)]
    texts, labels = [], []
    for i, sentence in enumerate(sentences):
        words = sentence.split()
        for line in [sentence, " ".join(words[:2]), " ".join(words[1:4]), words[1]]:
            texts.append(line)
            labels.append(int(i % 3 > 0))
    rest, carved = datasets.carve((texts, np.asarray(labels, np.int32)), 0.1, np.random.default_rng(3))
    assert set(carved[0]) <= set(sentences)
    assert np.bincount(carved[1]).tolist() == [2, 4]  # 10% of the 20 and 40 sentences of each class
    held = {f" {text} " for text in carved[0]}
    assert not [text for text in rest[0] if any(f" {text} " in sentence for sentence in held)]
    assert len(rest[0]) == len(texts) - 4 * len(carved[0])


def test_unlabelled_test_split_is_replaced_by_validation():
    train, validation, test = _examples([0, 1] * 20), _examples([0, 1]), _examples([-1] * 4)
    new_train, new_validation, new_test = datasets.assign_splits(
        {"train": train, "validation": validation, "test": test}, seed=0)
    assert new_test[0] == validation[0]
    assert len(new_train[0]) == 36 and len(new_validation[0]) == 4
    assert not set(new_validation[0]) & set(new_train[0])


def test_train_alone_gives_carved_test_and_validation():
    train, validation, test = datasets.assign_splits({"train": _examples([0] * 50 + [1] * 50)}, seed=0)
    assert (len(train[0]), len(validation[0]), len(test[0])) == (80, 10, 10)
    assert len(set(train[0]) | set(validation[0]) | set(test[0])) == 100


def test_unlabelled_examples_in_train_are_dropped_and_counted(caplog):
    examples = {"train": _examples([0, 1, -1] * 10), "validation": _examples([0, 1]), "test": _examples([1, 0])}
    with caplog.at_level(logging.WARNING, logger="evonas"):
        train, _, _ = datasets.assign_splits(examples, seed=0)
    assert len(train[0]) == 20 and "dropped 10 unlabelled examples from the train split" in caplog.text


def test_unprepared_catalog_dataset_fails_at_once_without_downloading(tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("download_and_prepare must not be called")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    with pytest.raises(DatasetError) as error:
        datasets.load_text_task("glue/sst2", tmp_path)
    message = str(error.value)
    assert "'glue/sst2' is not prepared in" in message and str(tmp_path) in message
    assert "tfds build glue/sst2" in message and "evonas data import" in message


def test_unknown_dataset_is_one_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'no_such_data'.*evonas data import"):
        datasets.load_text_task("no_such_data", tmp_path)


def test_task_files_give_back_tokenizer_and_label_names(tmp_path):
    task = data.listops_task(num_train=10, num_validation=5, num_test=5)
    data.write_task_files(task, tmp_path)
    tokenizer, names = data.read_task_files(tmp_path)
    assert tokenizer == task.tokenizer and names == task.label_names
    assert json.loads((tmp_path / "task.json").read_text())["num_examples"] == {"train": 10, "validation": 5,
                                                                                 "test": 5}


# --- The command line ---------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_imports_files_and_searches_the_dataset(tmp_path, capsys):
    train = _write(tmp_path / "t.tsv", "text\tlabel\n" + "".join(f"w{i % 5} x {i}\t{i % 2}\n" for i in range(40)))
    assert main(["data", "import", "--name", "toy", "--data-dir", str(tmp_path / "tfds"), "--train", train,
                 "--format", "tsv", "--text-column", "text", "--label-column", "label"]) == 0
    assert "imported 'toy'" in capsys.readouterr().out
    config = _write(tmp_path / "config.json", json.dumps({"space": {"max_blocks": 1, "ops": ["identity", "conv3"],
                                                                    "widths": [16], "heads": [1]}}))
    run = tmp_path / "run"
    assert main(["search", "--dataset", "toy", "--data-dir", str(tmp_path / "tfds"), "--config", config,
                 "--out", str(run), "--children", "2", "--children-per-generation", "2", "--population", "2",
                 "--sample-size", "2",
                 "--steps", "2", "--min-frequency", "1", "--quiet"]) == 0
    tokenizer, names = data.read_task_files(run)
    assert names == ("0", "1") and {"w0", "x"} < set(tokenizer.vocab)


def test_cli_reports_bad_input_and_missing_data_without_traceback(tmp_path, capsys):
    train = _write(tmp_path / "t.tsv", b"text\tlabel\nna\xefve\t0\n")
    assert main(["data", "import", "--name", "toy", "--data-dir", str(tmp_path), "--train", train,
                 "--format", "tsv", "--text-column", "text", "--label-column", "label"]) == 2
    assert "line 2: bytes b'\\xef' are not valid utf-8" in capsys.readouterr().err
    assert main(["search", "--dataset", "glue/sst2", "--data-dir", str(tmp_path), "--quiet",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("evonas search: error: dataset 'glue/sst2' is not prepared") and "Traceback" not in err
    assert not (tmp_path / "run").exists(), "nothing is written before the data loads"


# --- The shared real datasets -------------------------------------------------------------------


def _shared(*parts) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (the real datasets live in ../shared/data next to the repository)")
    return path


@pytest.mark.slow
def test_mr_imports_fully_with_cp1252(tmp_path):
    negative, positive = _shared("mr", "rt-polarity.neg"), _shared("mr", "rt-polarity.pos")
    with pytest.raises(DatasetError, match=r"rt-polarity.neg, line \d+: .*--encoding"):
        import_files("mr", tmp_path, {"train": [f"neg={negative}", f"pos={positive}"]}, file_format="lines")
    path = import_files("mr", tmp_path, {"train": [f"neg={negative}", f"pos={positive}"]}, file_format="lines",
                        encoding="cp1252")
    builder = tfds.builder_from_directory(str(path))
    assert builder.info.splits["train"].num_examples == 10_662
    assert builder.info.features["label"].names == ["neg", "pos"]
    task = datasets.load_text_task("mr", tmp_path)
    assert (len(task.train), len(task.validation), len(task.test)) == (8637, 958, 1065)  # 2 repeated lines go to no split


@pytest.mark.slow
def test_sst2_imports_with_dev_as_test(tmp_path):
    train, dev = _shared("sst2", "train.tsv"), _shared("sst2", "dev.tsv")
    path = import_files("sst2", tmp_path, {"train": [str(train)], "test": [str(dev)]}, file_format="tsv",
                        text_columns=["sentence"], label_column="label")
    splits = tfds.builder_from_directory(str(path)).info.splits
    assert (splits["train"].num_examples, splits["test"].num_examples) == (67_349, 872)
