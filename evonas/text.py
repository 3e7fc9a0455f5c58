"""Tokenizers that turn text into PAD_ID-padded int32 rows: a word vocabulary, or raw UTF-8 bytes.

A tokenizer is plain data saved as JSON (`tokenizer.json` in a run directory), so retrain and predict
encode new text exactly as the search did.

Ids: `PAD_ID` (0) pads, `UNK_ID` (1) stands for an unknown word. Word ids follow in vocabulary
order; byte b has id `b + BYTE_OFFSET`, so the byte vocabulary has 256 + 2 ids. A text with no tokens
(no words; for bytes, the empty text) encodes as a single `UNK_ID`, never as an all-padding row that a model would
pool over nothing. Rows longer than `max_length` are cut at the end.
"""

import collections
import dataclasses
import functools
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PAD_ID = 0  # evonas.data re-exports it: padding is part of every task's token rows
UNK_ID = 1
PAD_TOKEN, UNK_TOKEN = "<pad>", "<unk>"
BYTE_OFFSET = 2  # byte b -> id b + 2, after PAD_ID and UNK_ID
WORD_PATTERN = r"\w+|[^\w\s]"  # runs of letters/digits, and each punctuation mark on its own
KINDS = ("word", "byte")


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    """Maps texts to int32[N, max_length] ids; `kind` is "word" (a fixed vocabulary) or "byte" (UTF-8 bytes).

    Word kind: `vocab[i]` is the token of id i, with `vocab[0] == "<pad>"`. Words are the matches of
    `pattern` in the (optionally lower-cased) text; a word outside `vocab` becomes `<unk>`, and a
    vocabulary without `<unk>` (ListOps's, whose ids predate it) rejects unknown words with a ValueError.
    """

    kind: str
    max_length: int
    vocab: tuple[str, ...] = ()
    lowercase: bool = False
    pattern: str = WORD_PATTERN

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown tokenizer kind {self.kind!r}; choose from {KINDS}")
        if self.max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {self.max_length}")
        if self.kind == "word" and (not self.vocab or self.vocab[PAD_ID] != PAD_TOKEN):
            raise ValueError(f"a word vocabulary must start with {PAD_TOKEN!r}")
        if self.kind == "word" and len(set(self.vocab)) != len(self.vocab):
            raise ValueError("the word vocabulary repeats a token")
        if self.kind == "byte" and self.vocab:
            raise ValueError("a byte tokenizer has no vocabulary")
        object.__setattr__(self, "vocab", tuple(self.vocab))

    @property
    def vocab_size(self) -> int:
        """Number of ids, padding and unknown included: the model's embedding rows."""
        return 256 + BYTE_OFFSET if self.kind == "byte" else len(self.vocab)

    def token_ids(self, text: str) -> list[int]:
        """Ids of one text, not truncated or padded; [UNK_ID] for a text without tokens."""
        if self.kind == "byte":
            ids = [byte + BYTE_OFFSET for byte in text.encode("utf-8")]
        else:
            ids = [self._word_id(word) for word in self.words(text)]
        return ids or [UNK_ID]

    def words(self, text: str) -> list[str]:
        """The word-kind tokens of a text, before looking them up."""
        return re.findall(self.pattern, text.lower() if self.lowercase else text)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """int32[N, max_length]: each text's ids, cut at max_length, then padded with PAD_ID."""
        rows = np.full((len(texts), self.max_length), PAD_ID, dtype=np.int32)
        for row, text in zip(rows, texts):
            ids = self.token_ids(text)[: self.max_length]
            row[: len(ids)] = ids
        return rows

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"vocab": list(self.vocab)}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "Tokenizer":
        known = {field.name for field in dataclasses.fields(cls)}
        if unknown := set(values) - known:
            raise ValueError(f"unknown tokenizer keys {sorted(unknown)}; known keys are {sorted(known)}")
        return cls(**values | {"vocab": tuple(values.get("vocab", ()))})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))

    @functools.cached_property
    def _ids(self) -> dict[str, int]:
        return {token: index for index, token in enumerate(self.vocab)}

    def _word_id(self, word: str) -> int:
        if word in self._ids:
            return self._ids[word]
        if UNK_TOKEN not in self._ids:
            raise ValueError(f"unknown token {word!r}: this vocabulary has no {UNK_TOKEN!r}")
        return self._ids[UNK_TOKEN]


def length_at_percentile(lengths: Iterable[int], percentile: float) -> int:
    """The smallest length that holds `percentile` percent of the given token counts (at least 1)."""
    if not 0 < percentile <= 100:
        raise ValueError(f"length percentile must be in (0, 100], got {percentile}")
    lengths = np.fromiter(lengths, dtype=np.int64)
    if lengths.size == 0:
        raise ValueError("cannot choose a length from no texts")
    return max(1, int(np.percentile(lengths, percentile, method="inverted_cdf")))


def build_word_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: int,
    min_frequency: int,
    lowercase: bool,
    max_length: int | None,
    length_percentile: float,
) -> Tokenizer:
    """A word tokenizer whose vocabulary holds the training texts' most frequent words.

    Args:
        texts: training texts only, so validation and test words stay unknown exactly as new text would.
        vocab_size: most ids in total, `<pad>` and `<unk>` included (at least 3).
        min_frequency: words seen fewer times become `<unk>`.
        lowercase: lower-case text before splitting (here and whenever the tokenizer encodes).
        max_length: padded row length; None chooses the `length_percentile` of training lengths.
        length_percentile: percent of training texts that fit when max_length is None.

    Returns:
        A Tokenizer with vocab `("<pad>", "<unk>", words by descending count, ties alphabetical)`,
        the same for the same texts in any order.
    """
    if vocab_size < 3:
        raise ValueError(f"vocab_size must be at least 3 (<pad>, <unk> and one word), got {vocab_size}")
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be at least 1, got {min_frequency}")
    splitter = Tokenizer("word", max_length=1, vocab=(PAD_TOKEN,), lowercase=lowercase)
    counts: collections.Counter[str] = collections.Counter()
    lengths = []
    for text in texts:
        words = splitter.words(text)
        counts.update(words)
        lengths.append(max(1, len(words)))
    frequent = sorted((word for word, count in counts.items() if count >= min_frequency), key=lambda w: (-counts[w], w))
    vocab = (PAD_TOKEN, UNK_TOKEN, *[word for word in frequent if word not in (PAD_TOKEN, UNK_TOKEN)])
    if max_length is None:
        max_length = length_at_percentile(lengths, length_percentile)
    return Tokenizer("word", max_length=max_length, vocab=vocab[:vocab_size], lowercase=lowercase)


def byte_tokenizer(max_length: int) -> Tokenizer:
    """A tokenizer over UTF-8 bytes: no vocabulary to build, any text encodes, 258 ids."""
    return Tokenizer("byte", max_length=max_length)


def byte_lengths(texts: Iterable[str]) -> list[int]:
    """UTF-8 lengths of texts, to choose a byte tokenizer's max_length with `length_at_percentile`."""
    return [max(1, len(text.encode("utf-8"))) for text in texts]

