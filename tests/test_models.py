"""Which model a build uses and which one searches a loaded index: decided in qa.models only."""
from __future__ import annotations

import pytest

from qa import models
from qa.embed import DEFAULT_MODEL, NO_MODEL
from qa.selftrain import SELF_TRAINED


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("QA_MODEL", raising=False)


def test_default_is_the_bundled_model():
    chosen = models.for_build(None, None)
    assert chosen.encoder.info.name == DEFAULT_MODEL and chosen.self_train is None and chosen.reason == ""


def test_flag_then_env_then_the_index_own_model(monkeypatch, tiny_model):
    assert models.for_build(NO_MODEL, None).encoder is None
    assert "no model requested" in models.for_build(NO_MODEL, None).reason
    assert models.for_build(None, SELF_TRAINED).self_train is not None  # the index keeps its own model
    assert models.for_build(None, SELF_TRAINED, rebuild=True).encoder.info.name == DEFAULT_MODEL
    monkeypatch.setenv("QA_MODEL", str(tiny_model))
    assert models.for_build(None, SELF_TRAINED).encoder.info.name == str(tiny_model)
    assert models.for_build(NO_MODEL, SELF_TRAINED).encoder is None


def test_unloadable_model_falls_back_to_self_training_and_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    chosen = models.for_build("sentence-transformers/no-such-model-here", None)
    assert chosen.encoder is None and chosen.self_train is not None and "no-such-model-here" in chosen.reason


def test_an_index_without_its_model_is_searched_by_keywords_with_a_notice(tmp_path):
    encoder, notice = models.for_index(SELF_TRAINED, None, tmp_path / "gen-1", tmp_path)
    assert encoder is None and "--retrain" in notice
    assert models.for_index(None, None, tmp_path, tmp_path) == (None, "")


def test_a_model_is_its_weights_not_its_name(tmp_path, corpus_dir):
    """The same path with other weights is not the model an index was built with."""
    import shutil

    from conftest import make_tiny_model
    from qa.embed import load_encoder
    from qa.index import IndexUnusable, build_index, read_manifest
    from qa.retrieve import Retriever
    from qa.sentences import load_splitter

    texts = [p.read_text(encoding="utf-8") for p in sorted(corpus_dir.glob("*.txt"))]
    path = make_tiny_model(tmp_path / "model", texts)
    build_index(corpus_dir, tmp_path / "index", load_splitter(), load_encoder(str(path)), progress=False)
    first = read_manifest(tmp_path / "index").model_fingerprint
    assert first and first == load_encoder(str(path)).info.fingerprint
    shutil.rmtree(path)
    make_tiny_model(path, texts, seed=1)  # same name, other weights
    other = load_encoder(str(path))
    assert other.info.fingerprint != first
    with pytest.raises(IndexUnusable, match="other weights"):
        Retriever.load(tmp_path / "index", encoder=other)
    r = Retriever.load(tmp_path / "index")  # loading the index's model finds other weights: keywords only, saying so
    assert r.encoder is None and "other weights" in r.notice
    with pytest.raises(IndexUnusable, match="other weights"):
        build_index(corpus_dir, tmp_path / "index", load_splitter(), other, progress=False)
