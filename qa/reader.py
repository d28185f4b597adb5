"""The reader: how well each retrieved sentence, read with its neighbours, answers the question (0..1).

A cross-encoder (MiniLM-L6, initialised from the bundled all-MiniLM-L6-v2 and trained by
qa.readertrain on SQuAD dev's even-position titles). The repository ships only what training
changed: the top layers and the head; the embeddings and the lowest layers stay frozen in training
and are read from the hash-checked bundled model. The shipped file is checked against its recorded sha256 before loading.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from qa.embed import ModelUnavailable, bundled_model_dir, file_sha256, quiet_loading, verify_sha256

log = logging.getLogger(__name__)

READER_ENV = "QA_READER"
WEIGHTS = Path(__file__).parent / "weights" / "reader.safetensors"
CARD = WEIGHTS.with_suffix(".json")  # sha256, threshold, how it was trained and measured
# Cost sets the shape: every token read costs the same, and r.ask has ~120 ms for the reader on two
# CPU cores (docs/reader.md). So the reader keeps the first LAYERS of MiniLM's 6, reads at most
# MAX_LENGTH tokens, and of each neighbour the CONTEXT_CHARS nearest the sentence.
LAYERS = 4
MAX_LENGTH = 80
CONTEXT_CHARS = 80
# Trained: the top layers and the head. Kept as the bundled model has them (and not shipped): the
# embeddings and the lowest FROZEN_LAYERS layers. Training is 1.6x faster and the file 5x smaller.
FROZEN_LAYERS = 2


@dataclass(frozen=True)
class Candidate:
    """A sentence to judge and the sentences around it in its article."""
    text: str
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()


def pair(question: str, c: Candidate) -> tuple[str, str]:
    """What the cross-encoder reads: the question, then the sentence, then its neighbours for who "he"
    or "it" is. The sentence comes first so that truncation cuts context, never the sentence."""
    before = " ".join(c.before)[-CONTEXT_CHARS:] if CONTEXT_CHARS else ""
    after = " ".join(c.after)[:CONTEXT_CHARS] if CONTEXT_CHARS else ""
    return question, f"{c.text} [SEP] {before} … {after}".strip()


@dataclass(frozen=True)
class ReaderCard:
    sha256: str  # of WEIGHTS
    threshold: float  # answer when the score reaches it; calibrated, see docs/reader.md
    trained: dict  # what qa.readertrain reported

    @classmethod
    def read(cls, path: Path = CARD) -> "ReaderCard":
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(data["sha256"], float(data["threshold"]), data.get("trained", {}))


class Reader:
    """A loaded reader. Load once (load_reader) and share it; scoring is read-only."""

    def __init__(self, model, threshold: float, name: str = "reader"):
        self.model, self.threshold, self.name = model, threshold, name

    def scores(self, question: str, candidates: Sequence[Candidate], batch_size: int = 32) -> np.ndarray:
        """(len(candidates),) float32 in 0..1: the probability that each candidate answers question."""
        if not candidates:
            return np.zeros(0, dtype=np.float32)
        out = self.model.predict([pair(question, c) for c in candidates], batch_size=batch_size,
                                 show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(out, dtype=np.float32).reshape(-1)


def new_model(device: str | None = None):
    """A cross-encoder over the bundled MiniLM: the starting point for training, and the frame the
    shipped weights are loaded into."""
    from sentence_transformers import CrossEncoder

    with quiet_loading(errors_only=True):  # "classifier newly initialised": expected here
        model = CrossEncoder(str(bundled_model_dir()), num_labels=1, max_length=MAX_LENGTH, device=device or "cpu")
    model.model.bert.encoder.layer = model.model.bert.encoder.layer[:LAYERS]
    model.model.config.num_hidden_layers = LAYERS
    return model


def frozen(name: str) -> bool:
    """Is this weight kept as the bundled model has it (not trained, not shipped)?"""
    return name.startswith("bert.embeddings.") or any(
        name.startswith(f"bert.encoder.layer.{i}.") for i in range(FROZEN_LAYERS))


def save_weights(model, path: Path = WEIGHTS) -> str:
    """Save the trained weights (all but the frozen ones), as float16; returns the file's sha256."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").half().contiguous() for k, v in model.model.state_dict().items() if not frozen(k)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return file_sha256(path)


def load_weights(model, path: Path, sha256: str) -> None:
    """Put the shipped weights into model (from new_model), after checking the file's hash."""
    from safetensors.torch import load_file

    if not path.exists():
        raise ModelUnavailable(f"the reader's weights {path} are missing; reinstall the package or train them "
                               f"with: qa train-reader")
    verify_sha256(path, sha256)
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    missing, unexpected = model.model.load_state_dict(state, strict=False)
    if unexpected or any(not frozen(k) for k in missing):
        raise ModelUnavailable(f"the reader's weights {path} do not fit the model: missing {missing}, "
                               f"unexpected {unexpected}")


def load_reader(path: Path = WEIGHTS, card: Path = CARD) -> Reader:
    """The shipped reader, or ModelUnavailable saying why not (answers then fall back to rules)."""
    if not card.exists():
        raise ModelUnavailable(f"no reader card at {card}; train the reader with: qa train-reader")
    info = ReaderCard.read(card)
    model = new_model()
    load_weights(model, path, info.sha256)
    model.model.eval()
    return Reader(model, info.threshold)


# Off unless asked for: the reader shipped now (qa/weights/reader.json) answers fewer questions right
# than the rules on the calibration halves (docs/reader.md), so the rules answer by default.
ON_BY_DEFAULT = False


def open_reader(name: str | None = None) -> tuple[Reader | None, str]:
    """The reader to answer with, or None and why answers come from the rules. name (or $QA_READER):
    'on' loads it, 'none' or 'off' does not; unset: ON_BY_DEFAULT."""
    choice = (name or os.environ.get(READER_ENV, "")).lower()
    if choice in ("none", "off") or (not choice and not ON_BY_DEFAULT):
        return None, (f"answers by rules: the reader is off ({READER_ENV}=on to use it; it does worse than "
                      f"the rules for now: docs/reader.md)")
    try:
        return load_reader(), ""
    except ModelUnavailable as e:
        return None, f"answers by rules: the reader cannot be loaded ({e})"
