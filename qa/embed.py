"""Sentence embeddings: load a sentence-transformers model by name or path, or say why not."""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/multi-qa-MiniLM-L6-cos-v1"
MODEL_ENV = "QA_MODEL"
NO_MODEL = "none"  # --model none: keyword-only on purpose

HOW_TO_GET_A_MODEL = (
    "To get semantic search: on a connected machine run "
    "`python -c \"from sentence_transformers import SentenceTransformer as S; "
    "S('{name}').save('models/{short}')\"`, copy models/{short} here and pass "
    "`--model models/{short}` (or set QA_MODEL); or fill the Hugging Face cache "
    "(~/.cache/huggingface) on a connected machine and copy it over."
)


class ModelUnavailable(RuntimeError):
    """The embedding model could not be loaded; the message says why and how to get it."""


@dataclass(frozen=True)
class EncoderInfo:
    name: str  # what the user asked for: a hub name or a local path
    dim: int


class Encoder:
    """A loaded sentence-transformers model that turns text into unit vectors."""

    def __init__(self, model, name: str):
        self.model = model
        self.info = EncoderInfo(name=name, dim=int(model.get_embedding_dimension()))

    def encode_documents(self, texts: list[str], batch_size: int = 128, progress: bool = False) -> np.ndarray:
        """(n, d) float32, L2-normalised."""
        return self._encode(texts, batch_size, progress, query=False)

    def encode_queries(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        """(n, d) float32, L2-normalised; uses the model's query prompt when it has one."""
        return self._encode(texts, batch_size, False, query=True)

    def _encode(self, texts: list[str], batch_size: int, progress: bool, query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.info.dim), dtype=np.float32)
        fn = self.model.encode_query if query else self.model.encode_document
        vectors = fn(list(texts), batch_size=batch_size, show_progress_bar=progress,
                     convert_to_numpy=True, normalize_embeddings=True)
        return np.ascontiguousarray(vectors, dtype=np.float32)


def resolve_model_name(name: str | None) -> str:
    """The flag wins, then $QA_MODEL, then the default."""
    return name or os.environ.get(MODEL_ENV) or DEFAULT_MODEL


def _hub_reachable(timeout: float = 2.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_encoder(name: str, device: str | None = None) -> Encoder:
    """Load a model from a local path, the local cache, or the hub (only when reachable).

    Raises ModelUnavailable with instructions when none of these works, instead of
    the hub client's minute of retries.
    """
    from sentence_transformers import SentenceTransformer

    if device is None:
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if Path(name).expanduser().exists():
        try:
            return Encoder(SentenceTransformer(str(Path(name).expanduser()), device=device), name)
        except (OSError, ValueError) as e:
            raise ModelUnavailable(f"{name} exists but is not a sentence-transformers model: {e}") from e
    try:
        return Encoder(SentenceTransformer(name, device=device, local_files_only=True), name)
    except (OSError, ValueError) as e:
        log.debug("%s is not cached: %s", name, e)
    short = name.rstrip("/").split("/")[-1]
    how = HOW_TO_GET_A_MODEL.format(name=name, short=short)
    if not _hub_reachable():
        raise ModelUnavailable(f"model {name!r} is not cached and the Hugging Face hub cannot be reached. {how}")
    try:
        return Encoder(SentenceTransformer(name, device=device), name)
    except (OSError, ValueError) as e:
        raise ModelUnavailable(f"model {name!r} could not be downloaded: {e}. {how}") from e
