"""Self-trained embeddings: pairs, training, the saved model, and an index that trains and reuses one."""
from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qa.index import build_index, live_generation, read_manifest
from qa.retrieve import SELF_TRAINED_WEIGHTS, Retriever, Weights
from qa.selftrain import (INFO_FILE, MODEL_DIR, SELF_TRAINED, Document, Training, load, save, train,
                          training_pairs)
from qa.sentences import load_splitter

# Small enough to train in a second or two; the corpus below has ~500 sentences.
FAST = Training(dim=32, vocab_size=600, window=5, pair_views=3_000, batch_size=64, learning_rate=0.05,
                min_sentences=200)

TOPICS = {
    "economy": ("bank", "interest", "rates", "borrowing", "costs", "inflation", "lenders", "mortgage",
                "economists", "savers"),
    "football": ("striker", "goal", "league", "match", "coach", "injury", "keeper", "penalty", "fans",
                 "stadium"),
    "music": ("band", "album", "chart", "concert", "singer", "guitar", "tour", "single", "label", "festival"),
}
VERBS = ("watched", "discussed", "followed", "reported on", "worried about", "praised", "questioned")


def synthetic_articles(n_per_topic: int = 20, sentences: int = 8, seed: int = 1) -> list[tuple[str, str, str]]:
    """(id, title, body) articles whose words keep to one topic each, so topic words co-occur."""
    rng = random.Random(seed)
    out = []
    for topic, words in TOPICS.items():
        for i in range(n_per_topic):
            body = " ".join(f"The {rng.choice(words)} {rng.choice(VERBS)} the {rng.choice(words)} and "
                            f"the {rng.choice(words)}." for _ in range(sentences))
            out.append((f"{topic}-{i:02d}", f"{rng.choice(words).title()} and {rng.choice(words)}", body))
    return out


def write_corpus(folder: Path, articles: list[tuple[str, str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for aid, title, body in articles:
        (folder / f"{aid}.txt").write_text(f"title: {title}\n\n{body}\n", encoding="utf-8")
    return folder


def documents(articles) -> list[Document]:
    splitter = load_splitter()
    return [Document(title, tuple(s.text for s in splitter.split(aid, body))) for aid, title, body in articles]


def test_training_pairs_are_neighbours_and_title_with_lead():
    docs = [Document("Rates rise", ("The bank acted.", "Rates rose.", "Savers cheered.")),
            Document("", ("Only one sentence.",)),
            Document("Same", ("Same",))]  # a title equal to its lead is no pair
    assert training_pairs(docs) == [("The bank acted.", "Rates rose."), ("Rates rose.", "Savers cheered."),
                                    ("Rates rise", "The bank acted.")]


def test_trained_model_relates_words_that_share_articles_and_is_reproducible(tmp_path):
    docs = documents(synthetic_articles())
    model, info = train(docs, FAST, progress=False)
    assert info["pairs"] == len(training_pairs(docs)) and info["device"] in ("cpu", "cuda")
    q, same, other = model.encode(["mortgage savers", "the lenders and the inflation", "the keeper and the penalty"],
                                  normalize_embeddings=True)
    assert q @ same > q @ other + 0.2  # no word in common with either: only co-occurrence can tell

    again, _ = train(docs, FAST, progress=False)
    texts = ["the striker and the coach", "a concert"]
    assert np.array_equal(model.encode(texts), again.encode(texts))


def test_saved_model_is_an_ordinary_sentence_transformers_folder_with_a_card(tmp_path):
    from sentence_transformers import SentenceTransformer

    model, info = train(documents(synthetic_articles(n_per_topic=8)), FAST, progress=False)
    save(model, info, tmp_path / "m")
    plain = SentenceTransformer(str(tmp_path / "m"), device="cpu")
    assert np.allclose(plain.encode(["the band"]), model.encode(["the band"]))
    card = (tmp_path / "m" / "README.md").read_text(encoding="utf-8")
    assert "own articles only" in card and info["trained_at"] in card
    assert json.loads((tmp_path / "m" / INFO_FILE).read_text())["pairs"] == info["pairs"]
    enc = load(tmp_path / "m")
    assert enc.info.name == SELF_TRAINED and enc.info.dim == 32


def _model_digest(index: Path) -> str:
    return hashlib.sha1((live_generation(index) / MODEL_DIR / "model.safetensors").read_bytes()).hexdigest()


def test_index_trains_a_model_uses_it_and_reuses_it_on_incremental_adds(tmp_path):
    articles = synthetic_articles()
    corpus = write_corpus(tmp_path / "corpus", articles[:-3])
    index = tmp_path / "index"
    report = build_index(corpus, index, load_splitter(), None, mode_reason="keyword-only: no model here",
                         progress=False, self_train=FAST)
    m = report.manifest
    assert (m.model, m.mode, m.model_path, m.dim) == (SELF_TRAINED, "hybrid", MODEL_DIR, 32)
    assert "self-trained on this corpus" in m.mode_reason and "no model here" in m.mode_reason
    assert report.trained and report.embedded == m.sentences
    assert (live_generation(index) / MODEL_DIR / "README.md").exists()

    r = Retriever.load(index)
    assert str(r.mode) == "hybrid (self-trained on this corpus)" and r.weights == SELF_TRAINED_WEIGHTS
    assert "self-trained on this corpus" in r.stats().mode_reason
    hits = r.search("mortgage lenders and savers")
    assert hits and all(h.dense is not None for h in hits) and hits[0].article_id.startswith("economy")
    before = {h.passage.sentence_id: h.dense for h in hits}
    digest = _model_digest(index)
    r.close()

    write_corpus(corpus, articles[-3:])  # an incremental add: the model is kept, not retrained
    report = build_index(corpus, index, load_splitter(), None, progress=False, self_train=FAST)
    assert report.added == 3 and report.trained is None and report.manifest.model == SELF_TRAINED
    assert report.embedded == report.manifest.sentences - m.sentences
    assert _model_digest(index) == digest
    r = Retriever.load(index)
    again = {h.passage.sentence_id: h.dense for h in r.search("mortgage lenders and savers", k=10)}
    assert all(again[s] == pytest.approx(d, abs=1e-6) for s, d in before.items() if s in again)
    r.close()

    report = build_index(corpus, index, load_splitter(), None, progress=False, self_train=FAST, retrain=True)
    assert report.trained and report.added == 0 and report.embedded == report.manifest.sentences


def test_small_corpus_stays_keyword_only_and_says_why(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", synthetic_articles(n_per_topic=2))
    report = build_index(corpus, tmp_path / "index", load_splitter(), None, mode_reason="keyword-only: x",
                         progress=False, self_train=FAST)
    m = report.manifest
    assert (m.model, m.mode, m.model_path) == (None, "keyword-only", None)
    assert "too few to train" in m.mode_reason and f"{FAST.min_sentences:,}" in m.mode_reason
    assert not (live_generation(tmp_path / "index") / MODEL_DIR).exists()
    assert Retriever.load(tmp_path / "index").weights == Weights()


def test_keyword_only_index_gains_a_model_once_large_enough(tmp_path):
    articles = synthetic_articles()
    corpus = write_corpus(tmp_path / "corpus", articles[:4])
    index = tmp_path / "index"
    assert build_index(corpus, index, load_splitter(), None, progress=False, self_train=FAST).manifest.model is None
    write_corpus(corpus, articles[4:])
    assert build_index(corpus, index, load_splitter(), None, progress=False,
                       self_train=FAST).manifest.model == SELF_TRAINED


def test_cli_default_corpus_stays_keyword_only_when_no_model_can_be_loaded(tmp_path, corpus_dir):
    env = {**os.environ, "QA_MODEL": str(tmp_path / "no-such-model"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "qa.cli", "index", str(corpus_dir), "--index", str(tmp_path / "ix")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "mode: keyword-only" in done.stdout and "too few to train a model on this corpus" in done.stdout
    assert read_manifest(tmp_path / "ix").model is None


def test_retrain_cannot_be_combined_with_a_named_model(tmp_path, corpus_dir, capsys):
    from qa.cli import main

    with pytest.raises(SystemExit):
        main(["index", str(corpus_dir), "--index", str(tmp_path / "ix"), "--retrain", "--model", "some/model"])
    assert "--retrain" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_trains_on_a_large_enough_corpus_and_answers_with_it(tmp_path):
    """The real default Training on ~5,400 synthetic sentences, through `qa index` and `qa ask`."""
    corpus = write_corpus(tmp_path / "corpus", synthetic_articles(n_per_topic=150, sentences=12))
    env = {**os.environ, "QA_MODEL": str(tmp_path / "no-such-model"), "HF_HUB_OFFLINE": "1"}

    def qa(*args):
        done = subprocess.run([sys.executable, "-m", "qa.cli", *args, "--index", str(tmp_path / "ix")], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        return done.stdout

    out = qa("index", str(corpus))
    assert "mode: hybrid (self-trained" in out and "self-trained on this corpus" in out and "trained in this run" in out
    out = qa("index", str(corpus))  # nothing changed: nothing trained
    assert "0 added" in out and "trained in this run" not in out
    out = json.loads(qa("ask", "What did the mortgage lenders do?", "--json"))
    assert out["citations"] and all(c["article_id"].startswith("economy") for c in out["citations"])
