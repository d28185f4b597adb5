"""Which model embeds an index, decided in one place: for a build (the flag, $QA_MODEL, the index's
own model, the default) and for a loaded index (its manifest's model)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from qa import selftrain
from qa.embed import DEFAULT_MODEL, MODEL_ENV, NO_MODEL, Encoder, ModelUnavailable, load_encoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildModel:
    """What a build embeds with: a loaded pretrained encoder, a model trained on the corpus
    (self_train set), or neither (keyword-only, reason says why)."""
    encoder: Encoder | None
    self_train: selftrain.Training | None
    reason: str  # why not the pretrained model asked for; '' when it is used


def for_build(requested: str | None, indexed: str | None, rebuild: bool = False, retrain: bool = False) -> BuildModel:
    """requested: --model (None: $QA_MODEL, else the index's own model `indexed` unless rebuilding,
    else DEFAULT_MODEL). A pretrained model that cannot be loaded falls back to one trained on the
    corpus (keyword-only below its minimum size); NO_MODEL is keyword-only on purpose."""
    named = requested or os.environ.get(MODEL_ENV)
    if not named and not rebuild and indexed:
        named = indexed
    if retrain or named == selftrain.SELF_TRAINED:
        return BuildModel(None, selftrain.Training(), "")
    name = named or DEFAULT_MODEL
    if name == NO_MODEL:
        return BuildModel(None, None, "keyword-only: no model requested (--model none)")
    try:
        return BuildModel(load_encoder(name), None, "")
    except ModelUnavailable as e:
        reason = f"keyword-only: {e}"
        log.warning(reason + "; a model will be trained on this corpus if it is large enough")
        return BuildModel(None, selftrain.Training(), reason)


def for_index(model: str | None, model_path: str | None, gen: Path, index_dir: Path,
              fingerprint: str | None = None) -> tuple[Encoder | None, str]:
    """The encoder that searches an index built with model (its manifest's, whose weights had
    fingerprint), or None and why."""
    if model is None:
        return None, ""
    encoder, why = _load_for_index(model, model_path, gen, index_dir)
    if encoder is not None and fingerprint and encoder.info.fingerprint and encoder.info.fingerprint != fingerprint:
        return None, (f"keyword-only: {model} now has other weights than the index was built with (sha256 "
                      f"{encoder.info.fingerprint[:12]}…, not {fingerprint[:12]}…); rebuild with qa index CORPUS "
                      f"--index {index_dir} --rebuild")
    return encoder, why


def _load_for_index(model: str, model_path: str | None, gen: Path, index_dir: Path) -> tuple[Encoder | None, str]:
    if model == selftrain.SELF_TRAINED:
        try:
            return selftrain.load(gen / (model_path or selftrain.MODEL_DIR)), ""
        except ModelUnavailable as e:
            return None, (f"keyword-only: the index's self-trained model cannot be loaded ({e}); train it "
                          f"again with: qa index CORPUS --index {index_dir} --retrain")
    try:
        return load_encoder(model), ""
    except ModelUnavailable as e:
        return None, f"keyword-only: the index's model cannot be loaded now ({e})"
