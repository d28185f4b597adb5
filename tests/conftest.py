"""Shared fixtures: the default corpus, tiny sentence-transformers models built here, built indexes."""
from __future__ import annotations

import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "corpus"
SHARED_DATA = ROOT.parent / "shared" / "data"


def make_tiny_model(path: Path, texts: list[str], dim: int = 256, seed: int = 0) -> Path:
    """A StaticEmbedding model over a WordPiece tokenizer trained on texts, saved as an ordinary
    sentence-transformers folder. Random token vectors averaged over a sentence approximate
    bag-of-words cosine, so similar sentences really are close."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=2000, special_tokens=["[UNK]", "[PAD]"]))
    # Each token's vector comes from its own text, not its id: the trainer numbers tied tokens in no
    # fixed order, and the model must be the same in every run.
    weights = np.zeros((tok.get_vocab_size(), dim), dtype=np.float32)
    for token, i in tok.get_vocab().items():
        weights[i] = np.random.default_rng([seed, zlib.crc32(token.encode())]).standard_normal(dim)
    model = SentenceTransformer(modules=[StaticEmbedding(tok, embedding_weights=weights)], device="cpu")
    model.save(str(path))
    return path


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """A copy of the default corpus that tests may change."""
    dst = tmp_path_factory.mktemp("corpus") / "corpus"
    shutil.copytree(CORPUS, dst)
    return dst


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, corpus_dir) -> Path:
    texts = [p.read_text(encoding="utf-8") for p in sorted(corpus_dir.glob("*.txt"))]
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny", texts)


@pytest.fixture(scope="session")
def keyword_index(tmp_path_factory, corpus_dir) -> Path:
    from qa.index import build_index
    from qa.sentences import load_splitter

    out = tmp_path_factory.mktemp("kw") / "index"
    build_index(corpus_dir, out, load_splitter(), None, mode_reason="keyword-only: test", progress=False)
    return out


@pytest.fixture(scope="session")
def hybrid_index(tmp_path_factory, corpus_dir, tiny_model) -> Path:
    from qa.embed import load_encoder
    from qa.index import build_index
    from qa.sentences import load_splitter

    out = tmp_path_factory.mktemp("hy") / "index"
    build_index(corpus_dir, out, load_splitter(), load_encoder(str(tiny_model)), progress=False)
    return out


@pytest.fixture(scope="module")
def ray_cluster() -> str:
    """The address of a local Ray cluster of 2 CPUs, this process connected to it, for one test
    module. Where Ray is not installed or cannot start, the test is skipped with the reason;
    QA_REQUIRE_RAY=1 (CI) makes that a failure."""
    try:
        import ray

        from qa import distributed
        distributed.connect("local", num_cpus=2)
    except Exception as e:  # ImportError: no extra; RayUnavailable: it cannot start here
        if os.environ.get("QA_REQUIRE_RAY") == "1":
            raise
        pytest.skip(f"Ray cannot run here ({type(e).__name__}: {e}); install it with "
                    ".venv/bin/pip install -c constraints.txt -e '.[ray]'")
    yield ray.get_runtime_context().gcs_address
    distributed.disconnect()
