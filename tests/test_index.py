"""Index building: save/load, FAISS against brute force, manifest checks, incremental and atomic updates."""
from __future__ import annotations

import json
import shutil

import faiss
import numpy as np
import pytest

from qa import index as index_mod
from qa.embed import load_encoder
from qa.index import IndexUnusable, build_index, live_generation, read_manifest
from qa.retrieve import Retriever
from qa.sentences import load_splitter


def test_manifest_records_what_was_built(keyword_index, hybrid_index, tiny_model):
    kw = read_manifest(keyword_index)
    assert (kw.mode, kw.model, kw.dim, kw.articles, kw.sentences) == ("keyword-only", None, None, 2, 26)
    assert kw.mode_reason and kw.splitter == load_splitter().name and len(kw.corpus_fingerprint) == 40
    hy = read_manifest(hybrid_index)
    assert (hy.mode, hy.model, hy.dim, hy.faiss_index) == ("hybrid", str(tiny_model), 256, "IndexFlatIP")
    assert hy.corpus_fingerprint == kw.corpus_fingerprint


def test_store_keeps_offsets(keyword_index):
    r = Retriever.load(keyword_index)
    for hit in r.search("Amnesty attacks schools hospitals Idlib", k=5):
        p = hit.passage
        assert r.article(p.article_id).text[p.start:p.end] == p.text


def test_faiss_matches_brute_force(hybrid_index, tiny_model):
    gen = live_generation(hybrid_index)
    vectors = np.load(gen / "vectors.npy")
    index = faiss.read_index(str(gen / "dense.faiss"))
    queries = load_encoder(str(tiny_model)).encode_queries(["hospital Ariha civilians", "cluster munitions school"])
    scores, ids = index.search(queries, 5)
    brute = queries @ vectors.T
    assert np.array_equal(ids, np.argsort(-brute, axis=1)[:, :5])
    assert np.allclose(scores, np.sort(brute, axis=1)[:, ::-1][:, :5], atol=1e-5)


def test_hnsw_above_threshold_finds_the_exact_neighbours(tmp_path, corpus_dir, tiny_model, monkeypatch):
    monkeypatch.setattr(index_mod, "HNSW_THRESHOLD", 10)
    encoder = load_encoder(str(tiny_model))
    build_index(corpus_dir, tmp_path / "ix", load_splitter(), encoder, progress=False)
    assert read_manifest(tmp_path / "ix").faiss_index == "IndexHNSWFlat"
    gen = live_generation(tmp_path / "ix")
    vectors = np.load(gen / "vectors.npy")
    _, ids = faiss.read_index(str(gen / "dense.faiss")).search(vectors[:5], 1)
    assert ids[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_save_load_gives_identical_results(hybrid_index, tiny_model, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(hybrid_index, copy)
    encoder = load_encoder(str(tiny_model))
    a, b = Retriever.load(hybrid_index, encoder=encoder), Retriever.load(copy, encoder=encoder)
    for q in ["How many civilians were killed in Ariha?", "Who leads Amnesty in the region?"]:
        assert a.search(q) == b.search(q)


def test_model_mismatch_is_a_clear_error(keyword_index, hybrid_index, tiny_model, corpus_dir, tmp_path):
    encoder = load_encoder(str(tiny_model))
    with pytest.raises(IndexUnusable, match="--rebuild"):
        build_index(corpus_dir, keyword_index, load_splitter(), encoder, progress=False)
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model, other)
    with pytest.raises(IndexUnusable, match="--model"):
        Retriever.load(hybrid_index, encoder=load_encoder(str(other)))


def test_format_mismatch_is_a_clear_error(keyword_index, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(keyword_index, copy)
    manifest = live_generation(copy) / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "format": "newsqa-index v0"}))
    with pytest.raises(IndexUnusable, match="Rebuild it"):
        Retriever.load(copy)


def test_missing_index_says_how_to_build(tmp_path):
    with pytest.raises(IndexUnusable, match="qa index"):
        Retriever.load(tmp_path / "nowhere")


def test_incremental_add_change_and_remove(tmp_path, corpus_dir, tiny_model):
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    encoder = load_encoder(str(tiny_model))
    first = build_index(corpus, tmp_path / "ix", load_splitter(), encoder, progress=False)
    assert (first.added, first.embedded) == (2, 26)
    again = build_index(corpus, tmp_path / "ix", load_splitter(), encoder, progress=False)
    assert (again.added, again.updated, again.removed, again.embedded, again.unchanged) == (0, 0, 0, 0, 2)

    (corpus / "new.txt").write_text("title: Aid\n\nAid convoys reached Idlib on Tuesday. Doctors said supplies ran low.")
    added = build_index(corpus, tmp_path / "ix", load_splitter(), encoder, progress=False)
    assert (added.added, added.embedded, added.manifest.sentences) == (1, 2, 28)
    hit = Retriever.load(tmp_path / "ix", encoder=encoder).search("aid convoys", k=1)[0]
    assert hit.article_id == "new" and hit.text == "Aid convoys reached Idlib on Tuesday."

    (corpus / "new.txt").write_text("title: Aid\n\nAid convoys reached Idlib on Wednesday.")
    changed = build_index(corpus, tmp_path / "ix", load_splitter(), encoder, progress=False)
    assert (changed.updated, changed.embedded, changed.manifest.sentences) == (1, 1, 27)

    (corpus / "new.txt").unlink()
    removed = build_index(corpus, tmp_path / "ix", load_splitter(), encoder, progress=False)
    assert (removed.removed, removed.manifest.sentences) == (1, 26)
    assert removed.manifest.corpus_fingerprint == first.manifest.corpus_fingerprint
    # vectors carried over equal freshly embedded ones
    fresh = build_index(corpus, tmp_path / "ix2", load_splitter(), encoder, progress=False)
    assert np.allclose(np.load(live_generation(tmp_path / "ix") / "vectors.npy"),
                       np.load(live_generation(tmp_path / "ix2") / "vectors.npy"), atol=1e-6)
    assert fresh.manifest.sentences == 26


def test_articles_from_another_folder_are_kept(tmp_path, corpus_dir):
    other = tmp_path / "more"
    other.mkdir()
    (other / "x.txt").write_text("Flooding closed the coastal road near Latakia on Sunday.")
    build_index(corpus_dir, tmp_path / "ix", load_splitter(), None, progress=False)
    report = build_index(other, tmp_path / "ix", load_splitter(), None, progress=False)
    assert (report.added, report.removed, report.manifest.articles) == (1, 0, 3)


def test_failed_build_leaves_previous_index_usable(tmp_path, corpus_dir, monkeypatch):
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    build_index(corpus, tmp_path / "ix", load_splitter(), None, progress=False)
    before = Retriever.load(tmp_path / "ix").search("cluster munitions school")
    (corpus / "new.txt").write_text("A new article about floods.")

    def die(*args, **kwargs):
        raise KeyboardInterrupt("killed midway")

    monkeypatch.setattr(index_mod, "_write_keyword_indexes", die)
    with pytest.raises(KeyboardInterrupt):
        build_index(corpus, tmp_path / "ix", load_splitter(), None, progress=False)
    assert len(list((tmp_path / "ix").glob("gen-*"))) == 1
    r = Retriever.load(tmp_path / "ix")
    assert r.manifest.articles == 2 and r.search("cluster munitions school") == before


def test_nothing_readable_is_an_error_and_keeps_the_index(tmp_path, corpus_dir):
    build_index(corpus_dir, tmp_path / "ix", load_splitter(), None, progress=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.txt").write_text("   ")
    with pytest.raises(IndexUnusable, match="nothing to index"):
        build_index(bad, tmp_path / "ix2", load_splitter(), None, progress=False)
    report = build_index(bad, tmp_path / "ix", load_splitter(), None, progress=False)
    assert report.manifest.articles == 2 and any("empty" in p.path for p in report.problems)
