"""An exported model directory: one standalone classifier that `evonas predict` loads and runs on new text.

Layout of a model directory:

- `genome.json`: the genome, the search space it indexes, and the decoded architecture (for reading).
- `model.json`: `vocab_size`, `max_length`, `num_classes` and `label_names`.
- `tokenizer.json`: the tokenizer that encoded the training data, so new text is encoded the same way.
- `params/`: the exact-size `TextClassifier` parameters, an orbax checkpoint.
"""

import dataclasses
import functools
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from evonas.errors import InputError
from evonas.layers import Params
from evonas.models import Architecture, TextClassifier
from evonas.space import SearchSpace
from evonas.text import PAD_ID, Tokenizer

PREDICT_BATCH_SIZE = 64  # rows per compiled call: every batch is padded to it, so prediction compiles once
MODEL_FILES = ("genome.json", "model.json", "tokenizer.json", "params")


@dataclasses.dataclass(frozen=True)
class ExportedModel:
    """A standalone classifier with its parameters, the tokenizer of its inputs and the names of its classes."""

    classifier: TextClassifier
    params: Params
    tokenizer: Tokenizer
    label_names: tuple[str, ...]

    @functools.cached_property
    def _apply(self):
        return jax.jit(lambda params, tokens: self.classifier.apply({"params": params}, tokens, tokens != PAD_ID))

    def logits(self, tokens: np.ndarray, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
        """float32[N, C] logits of token rows int32[N, max_length], in fixed-size padded batches."""
        count = len(tokens)
        padded = np.full((max(1, -(-count // batch_size)) * batch_size, tokens.shape[1]), PAD_ID, np.int32)
        padded[:count] = tokens
        batches = [np.asarray(self._apply(self.params, padded[start:start + batch_size]))
                   for start in range(0, len(padded), batch_size)]
        return np.concatenate(batches)[:count]

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """float32[N, C] class probabilities of raw texts."""
        return np.asarray(jax.nn.softmax(self.logits(self.tokenizer.encode(texts)), axis=-1))


def export_model(model_dir: str | Path, space: SearchSpace, genome: Sequence[int], params: Params,
                 tokenizer: Tokenizer, label_names: Sequence[str]) -> Path:
    """Writes a model directory for the standalone parameters `params` of `genome`; returns its path."""
    model_dir = Path(model_dir).resolve()
    model_dir.mkdir(parents=True, exist_ok=True)
    genome = [int(g) for g in space.validate(genome)]
    architecture = Architecture.from_genome(space, genome).to_dict()
    _write_json(model_dir / "genome.json", {"genome": genome, "space": space.to_json(), "architecture": architecture})
    _write_json(model_dir / "model.json", {"vocab_size": tokenizer.vocab_size, "max_length": tokenizer.max_length,
                                           "num_classes": len(label_names), "label_names": list(label_names)})
    tokenizer.save(model_dir / "tokenizer.json")
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(model_dir / "params", params, force=True)
    return model_dir


def load_model(model_dir: str | Path) -> ExportedModel:
    """Reads a model directory written by `export_model`.

    Raises:
        InputError: if the directory or one of its files is missing or not valid, or its files disagree.
    """
    model_dir = Path(model_dir).resolve()
    if missing := [name for name in MODEL_FILES if not (model_dir / name).exists()]:
        raise InputError(f"MODEL_DIR {model_dir} is not an exported model: missing {', '.join(missing)} "
                         "(`evonas retrain RUN_DIR` writes one to RUN_DIR/retrain/model)")
    try:
        genome_file = _read_json(model_dir / "genome.json")
        config = _read_json(model_dir / "model.json")
        tokenizer = Tokenizer.load(model_dir / "tokenizer.json")
        if (tokenizer.vocab_size, tokenizer.max_length) != (config["vocab_size"], config["max_length"]):
            raise InputError(f"{model_dir}: tokenizer.json does not match model.json's vocab_size and max_length")
        space = SearchSpace.from_json(genome_file["space"])
        arch = Architecture.from_genome(space, space.validate(genome_file["genome"]))
        classifier = TextClassifier(arch, tokenizer.vocab_size, tokenizer.max_length, config["num_classes"])
        label_names = tuple(config["label_names"])
    except (ValueError, KeyError, TypeError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"MODEL_DIR {model_dir}: its files are not those of an exported model ({error})") from None
    tokens = jax.ShapeDtypeStruct((1, tokenizer.max_length), jnp.int32)
    mask = jax.ShapeDtypeStruct((1, tokenizer.max_length), jnp.bool_)
    shapes = jax.eval_shape(classifier.init, jax.random.key(0), tokens, mask)["params"]
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            params = checkpointer.restore(model_dir / "params", shapes)
    except Exception as error:  # noqa: BLE001 - orbax and tensorstore raise many types for damaged files
        raise InputError(f"{model_dir / 'params'} cannot be restored: {type(error).__name__}") from None
    return ExportedModel(classifier, jax.tree.map(jnp.asarray, params), tokenizer, label_names)


def predict_lines(model: ExportedModel, lines: Iterable[str],
                  batch_size: int = PREDICT_BATCH_SIZE) -> Iterator[dict[str, Any]]:
    """One prediction per line (`text`, `label`, `probability`, `probabilities` by label), a batch at a time."""
    for texts in _chunks(lines, batch_size):
        for text, row in zip(texts, model.probabilities(texts)):
            best = int(row.argmax())
            yield {"text": text, "label": model.label_names[best], "probability": float(row[best]),
                   "probabilities": {name: float(p) for name, p in zip(model.label_names, row)}}


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid JSON: {error}") from None
