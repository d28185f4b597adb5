"""Loading sentence-transformers models: local paths work, an unavailable model says how to get one."""
from __future__ import annotations

import time

import numpy as np
import pytest

from qa.embed import DEFAULT_MODEL, ModelUnavailable, load_encoder, resolve_model_name


def test_local_model_loads_through_sentence_transformers(tiny_model):
    enc = load_encoder(str(tiny_model))
    v = enc.encode_documents(["Russian strikes near a hospital", "a school hit by cluster munitions"])
    assert v.shape == (2, enc.info.dim) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert enc.encode_queries([]).shape == (0, enc.info.dim)


def test_unavailable_model_fails_fast_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    t0 = time.perf_counter()
    with pytest.raises(ModelUnavailable, match="--model"):
        load_encoder("sentence-transformers/no-such-model-here")
    assert time.perf_counter() - t0 < 30


def test_not_a_model_folder(tmp_path):
    with pytest.raises(ModelUnavailable, match="not a sentence-transformers model"):
        load_encoder(str(tmp_path))


def test_model_name_resolution(monkeypatch):
    monkeypatch.delenv("QA_MODEL", raising=False)
    assert resolve_model_name(None) == DEFAULT_MODEL
    monkeypatch.setenv("QA_MODEL", "models/mine")
    assert resolve_model_name(None) == "models/mine" and resolve_model_name("x") == "x"
