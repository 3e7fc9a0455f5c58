"""Text-classification datasets through tensorflow-datasets, without TensorFlow.

Datasets live on disk as TFDS datasets in the array_record format and are read with
`as_data_source`, which needs no TensorFlow (`tfds.load` and `as_dataset` do, and TensorFlow costs
about 1.4 GB and 3 s of import). `import_files` turns a user's files into such a dataset with a
builder generated for the given name; `load_text_task` turns any prepared TFDS text-classification
dataset, catalog or imported, into a `TextTask`. Nothing here downloads: without network,
tensorflow-datasets retries for minutes, so a dataset that is not prepared is one clear `DatasetError`.

Splits (`assign_splits`): fitness reads validation and only final evaluation reads test. A test split
that is absent or has no labels (GLUE's) is replaced by validation, and a missing validation split
is carved from train: stratified by class, `CARVE_FRACTION` of each class, drawn with the task seed, and
whole sentences only, so that a phrase-level train set (SST-2's) validates on no sentence it trained on in part.
"""

import contextlib
import io
import logging
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
import tensorflow_datasets.text  # registers the catalog's text builders (glue, ...), lazy in tfds
from tensorflow_datasets.core import constants

from evonas import phrases
from evonas import text as text_lib
from evonas.data import DatasetError, TextSplit, TextTask

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
CARVE_FRACTION = 0.1  # of each class in train, for a missing validation (and test) split
UNLABELLED = -1  # TFDS's ClassLabel value for an example without a label (e.g. GLUE's test split)
VERSION = "1.0.0"
_NAME_PATTERN = r"[a-z][a-z0-9_]*"


# --- Writing ------------------------------------------------------------------------------------


def write_dataset(
    name: str,
    data_dir: str | Path,
    splits: dict[str, tuple[Sequence[str], Sequence[int]]],
    label_names: Sequence[str],
    *,
    description: str = "",
    metadata: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes texts and class ids as the TFDS dataset `name` (features `text`, `label`) under data_dir.

    Args:
        splits: split name -> (texts, class ids); an id of -1 marks an example without a label.
        label_names: ClassLabel names; id i is label_names[i].
        metadata: JSON-able facts kept in the dataset's `metadata.json` (e.g. where it came from).
        overwrite: replace an earlier dataset of this name and version instead of refusing.

    Returns:
        The dataset's directory, readable by `tfds.builder_from_directory`.
    """
    if not isinstance(name, str) or not re.fullmatch(_NAME_PATTERN, name):
        raise DatasetError(f"dataset name {name!r} must be snake_case: a lower-case letter, then letters, digits or _")
    if _catalog_has(name):
        raise DatasetError(f"{name!r} is a tensorflow-datasets catalog name, which would shadow the import; choose another")
    target = Path(data_dir).expanduser() / name / VERSION
    if target.exists():
        if not overwrite:
            raise DatasetError(f"{target} already exists; choose another name or data dir, or overwrite it")
        shutil.rmtree(target)
    builder = _builder_class(name, splits, tuple(label_names), description, metadata or {})(
        data_dir=str(Path(data_dir).expanduser()), file_format="array_record"
    )
    tfds.disable_progress_bar()
    with contextlib.redirect_stdout(io.StringIO()):  # tfds prints "Downloading and preparing ...", untrue here
        builder.download_and_prepare()
    return target


def _builder_class(name, splits, label_names, description, metadata) -> type:
    """A GeneratorBasedBuilder named `name` that yields the given examples; TFDS shuffles them by key."""

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=description,
            features=tfds.features.FeaturesDict(
                {"text": tfds.features.Text(), "label": tfds.features.ClassLabel(names=label_names)}
            ),
            supervised_keys=("text", "label"),
            metadata=tfds.core.MetadataDict(metadata),
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in splits}

    def _generate_examples(self, split):
        texts, labels = splits[split]
        for index, (text, label) in enumerate(zip(texts, labels)):
            yield index, {"text": text, "label": int(label)}

    attributes = {
        "name": name,
        "VERSION": tfds.core.Version(VERSION),
        "_info": _info,
        "_split_generators": _split_generators,
        "_generate_examples": _generate_examples,
        "__module__": __name__,
    }
    return type("ImportedTextDataset", (tfds.core.GeneratorBasedBuilder,), attributes, skip_registration=True)


def _catalog_has(name: str) -> bool:
    try:
        tfds.builder_cls(name)
    except tfds.core.DatasetNotFoundError:
        return False
    return True


# --- Loading ------------------------------------------------------------------------------------


def default_data_dir() -> Path:
    """Where tensorflow-datasets keeps prepared data: $TFDS_DATA_DIR or ~/tensorflow_datasets."""
    return Path(constants.get_default_data_dir()).expanduser()


def prepared_builder(name: str, data_dir: str | Path | None = None) -> tfds.core.DatasetBuilder:
    """The TFDS builder of `name` whose data is prepared in data_dir as array_record; never downloads."""
    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    import_hint = (
        f"For your own files: `evonas data import --name NAME --data-dir {data_dir} --train FILE ...`."
    )
    try:
        with _absl_errors_only():  # tfds warns of each empty variant folder it looks into
            builder = tfds.builder(name, data_dir=str(data_dir))
            prepared = builder.is_prepared()
    except tfds.core.DatasetNotFoundError:
        raise DatasetError(
            f"unknown dataset {name!r}: it is not in the tensorflow-datasets catalog and not in {data_dir}. "
            + import_hint
        ) from None
    except ValueError as error:  # e.g. an unknown config; tfds appends lists of near names, often empty
        raise DatasetError(f"dataset {name!r}: {str(error).splitlines()[0].split(' Here are ')[0]}") from None
    if not prepared:
        raise DatasetError(
            f"dataset {name!r} is not prepared in {data_dir}, and evonas does not download (without network "
            f"tensorflow-datasets retries for minutes). On a machine with network, run "
            f"`tfds build {name} --data_dir {data_dir} --file_format array_record` and copy "
            f"{data_dir / name.split('/')[0]} here. " + import_hint
        )
    if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
        raise DatasetError(
            f"dataset {name!r} in {data_dir} is stored as {builder.info.file_format.value}, which needs TensorFlow "
            f"to read; rebuild it with `tfds build {name} --data_dir {data_dir} --file_format array_record`"
        )
    return builder


@contextlib.contextmanager
def _absl_errors_only():
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl_logger.setLevel(level)


def find_features(
    features: tfds.features.FeaturesDict,
    text_feature: str | None = None,
    label_feature: str | None = None,
    supervised_keys: tuple | None = None,
) -> tuple[str, str]:
    """Names of the text and label features: as given, else the supervised keys, else the only one of its kind."""
    return (
        _find_feature(features, text_feature, tfds.features.Text, "text", supervised_keys, 0),
        _find_feature(features, label_feature, tfds.features.ClassLabel, "label", supervised_keys, 1),
    )


def _find_feature(features, named, kind, role, supervised_keys, position) -> str:
    candidates = sorted(key for key, feature in features.items() if isinstance(feature, kind))
    if named is not None:
        if named not in candidates:
            raise DatasetError(f"no {kind.__name__} feature {named!r}; the {role} features are {candidates}")
        return named
    if supervised_keys and len(supervised_keys) == 2 and supervised_keys[position] in candidates:
        return supervised_keys[position]
    if len(candidates) != 1:
        raise DatasetError(f"cannot tell the {role} feature among {candidates}; name it with --{role}-feature")
    return candidates[0]


def load_text_task(
    name: str,
    data_dir: str | Path | None = None,
    *,
    text_feature: str | None = None,
    label_feature: str | None = None,
    tokenizer: str = "word",
    vocab_size: int = 20_000,
    min_frequency: int = 2,
    max_length: int | None = None,
    length_percentile: float = 99.0,
    lowercase: bool = False,
    seed: int = 0,
) -> TextTask:
    """A prepared TFDS text-classification dataset, catalog or imported, as a tokenized TextTask.

    Args:
        name: a TFDS name such as "glue/sst2", "imdb_reviews" or an imported dataset's name.
        data_dir: where it is prepared; None is tensorflow-datasets' default.
        text_feature, label_feature: feature names; None finds them from the metadata.
        tokenizer: "word" (vocabulary from train: vocab_size, min_frequency, lowercase) or "byte".
        max_length: padded length; None takes the length_percentile of training lengths.
        seed: draws the carved splits; the same seed gives the same splits.

    Raises:
        DatasetError: unknown or unprepared dataset, ambiguous features, fewer than two classes.
    """
    builder = prepared_builder(name, data_dir)
    text_key, label_key = find_features(builder.info.features, text_feature, label_feature, builder.info.supervised_keys)
    sources = builder.as_data_source()
    examples = {
        split: _read_split(sources[split], text_key, label_key) for split in SPLITS if split in sources
    }
    if "train" not in examples:
        raise DatasetError(f"dataset {name!r} has no train split; its splits are {sorted(sources)}")
    train, validation, test = assign_splits(examples, seed)
    label_names = tuple(builder.info.features[label_key].names)
    if len(np.unique(train[1])) < 2:
        raise DatasetError(f"the train split of {name!r} holds a single class; classification needs two or more")
    if tokenizer == "word":
        encoder = text_lib.build_word_tokenizer(
            train[0], vocab_size=vocab_size, min_frequency=min_frequency, lowercase=lowercase,
            max_length=max_length, length_percentile=length_percentile,
        )
    elif tokenizer == "byte":
        length = max_length or text_lib.length_at_percentile(text_lib.byte_lengths(train[0]), length_percentile)
        encoder = text_lib.byte_tokenizer(length)
    else:
        raise DatasetError(f"unknown tokenizer {tokenizer!r}; choose 'word' or 'byte'")
    encoded = [TextSplit(encoder.encode(texts), labels) for texts, labels in (train, validation, test)]
    return TextTask(name, *encoded, tokenizer=encoder, label_names=label_names)


Examples = tuple[list[str], np.ndarray]  # texts, int32 class ids


def _read_split(source, text_key: str, label_key: str) -> Examples:
    records = source.__getitems__(range(len(source)))
    texts = [record[text_key].decode("utf-8") for record in records]
    labels = np.array([record[label_key] for record in records], dtype=np.int32)
    return texts, labels


def assign_splits(examples: dict[str, Examples], seed: int) -> tuple[Examples, Examples, Examples]:
    """(train, validation, test): validation and test from the dataset where they hold labels, else carved.

    A test split that is absent or entirely unlabelled is replaced by validation; a validation split
    that is absent (or became test) is carved from train. Unlabelled examples elsewhere are dropped
    and counted in the log.
    """
    test = examples.get("test")
    if test is not None and (test[1] == UNLABELLED).all():
        logger.info("the test split has no labels, so validation serves as test")
        test = None
    validation = examples.get("validation")
    labelled = {
        split: _drop_unlabelled(part, split)
        for split, part in (("train", examples["train"]), ("validation", validation), ("test", test))
        if part is not None
    }
    train = labelled["train"]
    if "test" not in labelled:
        if "validation" in labelled:
            labelled["test"] = labelled.pop("validation")
        else:
            train, labelled["test"] = carve(train, CARVE_FRACTION, np.random.default_rng([seed, 0]))
            logger.info("no labelled test split: carved %d test examples from train", len(labelled["test"][1]))
    if "validation" not in labelled:
        train, labelled["validation"] = carve(train, CARVE_FRACTION, np.random.default_rng([seed, 1]))
        logger.info("no validation split: carved %d validation examples from train", len(labelled["validation"][1]))
    return train, labelled["validation"], labelled["test"]


def _drop_unlabelled(examples: Examples, split: str) -> Examples:
    keep = np.flatnonzero(examples[1] != UNLABELLED)
    if dropped := len(examples[1]) - len(keep):
        logger.warning("dropped %d unlabelled examples from the %s split", dropped, split)
    return _take(examples, keep)


def carve(examples: Examples, fraction: float, rng: np.random.Generator) -> tuple[Examples, Examples]:
    """(rest, carved): `fraction` of each class (at least one of any class with two or more), drawn by rng.

    Lines are carved by sentence group (`phrases.sentence_groups`), stratified by the class of the group's head:
    a carved group gives its head, the whole sentence, to the carved split, and its phrases to neither split, so
    nothing carved was trained on in part. Where no line holds another, every group is one line, and the carve
    is the same line by line.
    """
    labels = examples[1]
    head = phrases.sentence_groups(examples[0])
    heads = np.flatnonzero(head == np.arange(len(labels)))
    carved = []
    for label in np.unique(labels[heads]):
        members = rng.permutation(heads[labels[heads] == label])
        count = max(1, int(fraction * len(members) + 0.5)) if len(members) > 1 else 0  # halves round up
        carved.append(members[:count])
    carved_indices = np.sort(np.concatenate(carved))
    if carved_indices.size == 0:
        raise DatasetError(f"train holds too few examples ({len(labels)}) to carve a split from it")
    in_carved_group = np.isin(head, carved_indices)
    rest = np.flatnonzero(~in_carved_group)
    if dropped := int(in_carved_group.sum()) - carved_indices.size:
        logger.info("carving whole sentences left out %d of their phrases, which no split keeps", dropped)
    return _take(examples, rest), _take(examples, carved_indices)


def _take(examples: Examples, indices: np.ndarray) -> Examples:
    texts, labels = examples
    return [texts[index] for index in indices], labels[indices]
