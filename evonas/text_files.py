"""Users' own text files (TSV, CSV, JSONL, or one file of lines per label) read as labelled rows and
imported as a TFDS dataset, so that they load exactly like a catalog dataset.

Rules, each tested:
- Files are decoded with one encoding (default UTF-8); undecodable bytes are an error naming the file
  and line. Lines end at b"\\n" only (then a trailing "\\r" is removed), never at U+0085 and kin.
- TSV has no quoting (a `"` is an ordinary character); CSV follows `csv` quoting.
- Texts are stripped of surrounding white space; rows whose text is then empty are dropped, and
  the count is logged per file. A file with no rows left is an error.
- Labels are strings; the class names are the train split's labels sorted (numerically when all are
  integers), and class i is names[i]. A single class, or a validation/test label absent from train,
  is an error.
"""

import csv
import io
import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from evonas.data import DatasetError
from evonas.datasets import SPLITS, write_dataset

logger = logging.getLogger(__name__)

FORMATS = ("tsv", "csv", "jsonl", "lines")
Row = tuple[str, str]  # (text, label name)


def import_files(
    name: str,
    data_dir: str | Path,
    files: dict[str, Sequence[str]],
    *,
    file_format: str,
    text_columns: Sequence[str] = (),
    label_column: str | None = None,
    header: bool = True,
    encoding: str = "utf-8",
    overwrite: bool = False,
) -> Path:
    """Reads each split's files and writes them as the TFDS dataset `name` under data_dir.

    Args:
        files: split ("train", "validation", "test") -> its files, read one after another. In the
            "lines" format each is "LABEL=FILE": every line of FILE is a text of class LABEL.
        file_format: "tsv", "csv", "jsonl" or "lines".
        text_columns: the text's columns (names, or 0-based indices without a header); several are
            joined with a space. JSONL takes keys.
        label_column: the label's column, likewise.
        header: whether TSV/CSV files start with a header line.

    Returns:
        The dataset's directory.
    """
    if file_format not in FORMATS:
        raise DatasetError(f"unknown format {file_format!r}; choose from {FORMATS}")
    for directory in (Path(data_dir).expanduser(), *Path(data_dir).expanduser().absolute().parents):
        if directory.exists():
            if not directory.is_dir():
                raise DatasetError(f"--data-dir {data_dir}: {directory} is a file, not a directory")
            break
    if unknown := set(files) - set(SPLITS):
        raise DatasetError(f"unknown splits {sorted(unknown)}; splits are {SPLITS}")
    if not files.get("train"):
        raise DatasetError("a train file is required")
    if file_format != "lines" and (not text_columns or label_column is None):
        raise DatasetError(f"the {file_format} format needs a text column and a label column")
    rows = {
        split: [row for source in sources for row in _read(source, file_format, text_columns, label_column, header,
                                                            encoding)]
        for split, sources in files.items() if sources
    }
    names = label_names(label for _, label in rows["train"])
    if len(names) < 2:
        raise DatasetError(f"the train files hold a single class {names[0]!r}; classification needs two or more")
    class_ids = {label: index for index, label in enumerate(names)}
    for split, split_rows in rows.items():
        if unknown_labels := sorted({label for _, label in split_rows} - class_ids.keys()):
            raise DatasetError(f"labels {unknown_labels} of the {split} files do not occur in train, whose labels "
                               f"are {list(names)}")
    splits = {split: ([text for text, _ in r], [class_ids[label] for _, label in r]) for split, r in rows.items()}
    metadata = {"source": {"files": {split: list(sources) for split, sources in files.items() if sources},
                           "format": file_format, "encoding": encoding}}
    description = f"Imported by `evonas data import` from {file_format} files."
    return write_dataset(name, data_dir, splits, names, description=description, metadata=metadata,
                         overwrite=overwrite)


def label_names(labels: Iterable[str]) -> tuple[str, ...]:
    """Distinct labels sorted, numerically when all are integers (so "10" follows "9")."""
    distinct = set(labels)
    if all(re.fullmatch(r"-?\d+", label) for label in distinct):
        return tuple(sorted(distinct, key=int))
    return tuple(sorted(distinct))


def _read(source, file_format, text_columns, label_column, header, encoding) -> list[Row]:
    if file_format == "lines":
        label, separator, path = source.partition("=")
        if not separator or not label.strip() or not path:
            raise DatasetError(f"{source!r}: the lines format takes LABEL=FILE")
        return _kept(path, ((line, text, label.strip()) for line, text in _lines(_decoded(path, encoding))))
    text = _decoded(source, encoding)
    if file_format == "jsonl":
        return _kept(source, _jsonl_rows(source, text, text_columns, label_column))
    return _kept(source, _table_rows(source, text, file_format, text_columns, label_column, header))


def _decoded(path: str, encoding: str) -> str:
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error.strerror}") from None
    if not raw.strip():
        raise DatasetError(f"{path} is empty")
    try:
        return raw.decode(encoding).removeprefix("\ufeff")
    except LookupError:
        raise DatasetError(f"unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise DatasetError(
            f"{path}, line {line}: bytes {raw[error.start:error.end]!r} are not valid {encoding}; give the "
            "file's encoding with --encoding (e.g. cp1252 for Windows text such as MR's)"
        ) from None


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) split at "\\n" only; the empty piece after a final newline is no line."""
    pieces = text.split("\n")
    if pieces[-1] == "":
        pieces.pop()
    for number, piece in enumerate(pieces, start=1):
        yield number, piece.removesuffix("\r")


def _table_rows(path, text, file_format, text_columns, label_column, header) -> Iterator[tuple[int, str, str]]:
    tsv = file_format == "tsv"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if tsv else ",",
                        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL, strict=True)
    try:
        names = next(reader) if header else None
        text_indices = [_column_index(column, names, path) for column in text_columns]
        label_index = _column_index(label_column, names, path)
        needed = max(*text_indices, label_index) + 1
        for fields in reader:
            if not fields:
                continue  # a blank line is no row
            if len(fields) < needed:
                raise DatasetError(f"{path}, line {reader.line_num}: {len(fields)} fields, but column {needed - 1} "
                                   f"is needed (is the format {file_format}?)")
            yield reader.line_num, " ".join(fields[i].strip() for i in text_indices), fields[label_index]
    except csv.Error as error:
        raise DatasetError(f"{path}, line {reader.line_num}: {error}") from None


def _column_index(column: str, names: list[str] | None, path) -> int:
    """A column given by header name, else by 0-based index."""
    if names is not None and column in names:
        return names.index(column)
    if re.fullmatch(r"\d+", column):
        return int(column)
    known = f"columns are {names}" if names is not None else "without a header, give a 0-based index"
    raise DatasetError(f"{path} has no column {column!r}; {known}")


def _jsonl_rows(path, text, text_columns, label_column) -> Iterator[tuple[int, str, str]]:
    for line, piece in _lines(text):
        if not piece.strip():
            continue
        try:
            record = json.loads(piece)
        except json.JSONDecodeError as error:
            raise DatasetError(f"{path}, line {line}: not JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise DatasetError(f"{path}, line {line}: a JSON object is needed, got {type(record).__name__}")
        if missing := [key for key in (*text_columns, label_column) if key not in record]:
            raise DatasetError(f"{path}, line {line}: no key {missing[0]!r}; keys are {sorted(record)}")
        values = [record[key] for key in (*text_columns, label_column)]
        if not all(isinstance(value, str) or _is_int(value) for value in values):
            raise DatasetError(f"{path}, line {line}: text and label must be strings or integers, got {values!r}")
        yield line, " ".join(str(value).strip() for value in values[:-1]), str(values[-1])


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kept(path, rows: Iterable[tuple[int, str, str]]) -> list[Row]:
    """(text, label) of rows with a text, stripped; dropped empty texts are counted in the log."""
    kept, empty_lines = [], []
    for line, text, label in rows:
        text, label = text.strip(), label.strip()
        if not label:
            raise DatasetError(f"{path}, line {line}: empty label")
        if text:
            kept.append((text, label))
        else:
            empty_lines.append(line)
    if empty_lines:
        shown = ", ".join(map(str, empty_lines[:5])) + (", ..." if len(empty_lines) > 5 else "")
        logger.warning("%s: dropped %d rows with empty text (lines %s)", path, len(empty_lines), shown)
    if not kept:
        raise DatasetError(f"{path} has no rows with text")
    return kept
