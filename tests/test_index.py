"""Index building: save/load, FAISS against brute force, manifest checks, incremental and atomic updates."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from qa.answer import answer
from qa import index as index_mod
from qa.embed import load_encoder
from qa import store
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


def _segments(index):
    return index_mod.open_segments(live_generation(index), read_manifest(index))


def _vectors_by_sentence(index) -> dict[str, np.ndarray]:
    """Every live sentence's vector, by sentence id: the one copy, kept in the segments' FAISS indexes."""
    out = {}
    for seg in _segments(index):
        vectors = seg.vectors(np.arange(seg.sentences))
        for row, aid, _, _, _, _ in store.sentences(seg.db):
            if seg.live_article[seg.sentence_article[row]]:
                out[f"{aid}:{store.passages(seg.db, [row])[row][6]}"] = vectors[row]
    return out


def test_faiss_matches_brute_force(hybrid_index, tiny_model):
    (seg,) = _segments(hybrid_index)
    assert not (seg.path / "vectors.npy").exists()  # the vectors are stored once, in the FAISS index
    vectors = seg.vectors(np.arange(seg.sentences))
    encoder = load_encoder(str(tiny_model))
    texts = [t for *_, t in store.sentences(seg.db)]
    assert np.allclose(vectors, encoder.encode_documents(texts, progress=False), atol=1e-5)
    queries = encoder.encode_queries(["hospital Ariha civilians", "cluster munitions school"])
    scores, ids = seg.faiss.search(queries, 5)
    brute = queries @ vectors.T
    assert np.array_equal(ids, np.argsort(-brute, axis=1)[:, :5])
    assert np.allclose(scores, np.sort(brute, axis=1)[:, ::-1][:, :5], atol=1e-5)


def test_hnsw_above_threshold_finds_the_exact_neighbours(tmp_path, corpus_dir, tiny_model, monkeypatch):
    monkeypatch.setattr(index_mod, "EXACT_BELOW", 10)
    encoder = load_encoder(str(tiny_model))
    build_index(corpus_dir, tmp_path / "ix", load_splitter(), encoder, progress=False)
    assert read_manifest(tmp_path / "ix").faiss_index == "IndexHNSWSQ8"
    (seg,) = _segments(tmp_path / "ix")
    vectors = seg.vectors(np.arange(5))  # 8-bit codes decoded: within a rounding of the originals
    _, ids = seg.faiss.search(vectors, 1)
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


def test_format_mismatch_is_a_clear_error(keyword_index, tmp_path, corpus_dir):
    copy = tmp_path / "old"
    shutil.copytree(keyword_index, copy)
    manifest = live_generation(copy) / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "format": "newsqa-index v0"}))
    with pytest.raises(IndexUnusable, match="Rebuild it"):
        Retriever.load(copy)
    report = build_index(corpus_dir, copy, load_splitter(), None, progress=False)  # a build rebuilds it
    assert report.added == 2 and Retriever.load(copy).manifest.format == index_mod.FORMAT


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
    carried, embedded = _vectors_by_sentence(tmp_path / "ix"), _vectors_by_sentence(tmp_path / "ix2")
    assert carried.keys() == embedded.keys() and len(carried) == 26
    assert all(np.allclose(carried[i], embedded[i], atol=1e-6) for i in carried)
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

    monkeypatch.setattr(index_mod, "bm25_postings", die)
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


# --- one writer at a time, generations kept and removed, duplicates against the index -----------------

def _gens(index) -> set[str]:
    return {p.name for p in index.glob("gen-*")}


def test_a_second_writer_waits_then_fails_clearly(tmp_path, corpus_dir):
    build_index(corpus_dir, tmp_path / "ix", load_splitter(), None, progress=False)
    before = _gens(tmp_path / "ix")
    with index_mod.writer_lock(tmp_path / "ix"):
        with pytest.raises(index_mod.IndexBusy, match="another build of .* still running"):
            build_index(corpus_dir, tmp_path / "ix", load_splitter(), None, rebuild=True, progress=False,
                        lock_timeout=0.5)
    assert _gens(tmp_path / "ix") == before and Retriever.load(tmp_path / "ix").manifest.articles == 2


def test_the_lock_is_released_when_its_holder_dies(tmp_path, corpus_dir):
    import multiprocessing
    import os
    import signal
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()

    def hold():
        with index_mod.writer_lock(tmp_path / "ix"):
            ready.set()
            signal.pause()
    p = ctx.Process(target=hold)
    p.start()
    assert ready.wait(30)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    build_index(corpus_dir, tmp_path / "ix", load_splitter(), None, progress=False, lock_timeout=5)
    assert read_manifest(tmp_path / "ix").articles == 2


def _build_in_child(corpus, index, rebuild, out):
    try:
        report = build_index(corpus, index, load_splitter(), None, rebuild=rebuild, progress=False)
        out.put(("ok", report.manifest.articles))
    except BaseException as e:  # reported to the parent, which fails the test with it
        out.put(("error", repr(e)))


def test_two_builds_at_once_leave_an_index_that_answers(tmp_path, corpus_dir):
    """Two processes build the same index at the same moment: both succeed, one after the other."""
    import multiprocessing
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    (corpus / "new.txt").write_text("title: Aid\n\nAid convoys reached Idlib on Tuesday.")
    build_index(corpus_dir, tmp_path / "ix", load_splitter(), None, progress=False)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_build_in_child, args=(corpus, tmp_path / "ix", rebuild, out))
             for rebuild in (True, False)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    assert results == [("ok", 3), ("ok", 3)] and [p.exitcode for p in procs] == [0, 0]
    r = Retriever.load(tmp_path / "ix")
    assert r.search("aid convoys", k=1)[0].article_id == "new"
    assert not answer(r, "Which school was hit with cluster munitions?").abstained
    assert len(_gens(tmp_path / "ix")) <= 2


def test_previous_generation_is_kept_for_its_readers(tmp_path, corpus_dir):
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    build_index(corpus, tmp_path / "ix", load_splitter(), None, progress=False)
    first = live_generation(tmp_path / "ix")
    reader = Retriever.load(tmp_path / "ix")
    (corpus / "a.txt").write_text("Aid convoys reached Idlib on Tuesday.")
    build_index(corpus, tmp_path / "ix", load_splitter(), None, progress=False)
    assert first.exists() and (tmp_path / "ix" / "PREVIOUS").read_text() == first.name
    (corpus / "b.txt").write_text("Flooding closed the coastal road near Latakia on Sunday.")
    build_index(corpus, tmp_path / "ix", load_splitter(), None, progress=False)
    assert not first.exists() and len(_gens(tmp_path / "ix")) == 2
    # A reader of a deleted generation still reads it (the store is opened immutable, the rest is in memory).
    hit = reader.search("cluster munitions school", k=1)[0]
    assert reader.article(hit.article_id).text[hit.passage.start:hit.passage.end] == hit.text


def test_orphans_are_removed_even_by_a_build_with_nothing_to_do(tmp_path, corpus_dir):
    build_index(corpus_dir, tmp_path / "ix", load_splitter(), None, progress=False)
    live = live_generation(tmp_path / "ix").name
    for name in ("gen-00000000000000000001-99", "gen-99999999999999999999-98"):  # killed builds' folders
        (tmp_path / "ix" / name).mkdir()
        (tmp_path / "ix" / name / "store.sqlite").write_bytes(b"half")
    (tmp_path / "ix" / "CURRENT.tmp-99-abcd").write_text("gen-x")
    report = build_index(corpus_dir, tmp_path / "ix", load_splitter(), None, progress=False)
    assert report.added == 0 and _gens(tmp_path / "ix") == {live}
    assert sorted(p.name for p in (tmp_path / "ix").iterdir()) == ["CURRENT", "LOCK", live]


def test_an_article_repeating_an_indexed_one_is_indexed_once(tmp_path, corpus_dir):
    build_index(corpus_dir, tmp_path / "ix", load_splitter(), None, progress=False)
    other = tmp_path / "more"
    other.mkdir()
    text = (corpus_dir / "002_3d1258f428892b47.txt").read_text(encoding="utf-8")
    (other / "copy.txt").write_text("title: A copy\n\n" + text.replace("\n\n", "\n\n\n"), encoding="utf-8")
    (other / "x.txt").write_text("Flooding closed the coastal road near Latakia on Sunday.")
    report = build_index(other, tmp_path / "ix", load_splitter(), None, progress=False)
    assert report.duplicates == (("copy", "002_3d1258f428892b47"),)
    assert (report.added, report.manifest.articles) == (1, 3)
    again = build_index(other, tmp_path / "ix", load_splitter(), None, progress=False)
    assert (again.added, again.manifest.articles) == (0, 3)  # unchanged files are not read again


def test_upload_style_build_into_a_self_trained_index_keeps_its_model(tmp_path):
    """An index's own model is copied into every generation, also when the encoder is passed in."""
    from qa import selftrain
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    import random
    rng = random.Random(3)
    words = "bank rates savers inflation striker goal league coach band album chart concert".split()
    for i in range(40):
        body = " ".join(f"The {rng.choice(words)} met the {rng.choice(words)} and the {rng.choice(words)}."
                        for _ in range(8))
        (corpus / f"a{i:02d}.txt").write_text(f"title: T{i}\n\n{body}")
    fast = selftrain.Training(dim=16, vocab_size=300, window=5, pair_views=500, batch_size=64, min_sentences=100,
                              device="cpu")
    first = build_index(corpus, tmp_path / "ix", load_splitter(), None, self_train=fast, progress=False)
    assert first.manifest.model == selftrain.SELF_TRAINED
    r = Retriever.load(tmp_path / "ix")
    (corpus / "new.txt").write_text("title: Flood\n\nThe river Oder flooded Frankfurt on Tuesday.")
    second = build_index(corpus, tmp_path / "ix", load_splitter(), r.encoder, mode_reason=r.manifest.mode_reason,
                         progress=False)
    assert second.added == 1 and second.trained is None
    gen = live_generation(tmp_path / "ix")
    assert (gen / selftrain.MODEL_DIR / selftrain.INFO_FILE).read_text() == (
        live_generation(tmp_path / "ix").parent / (tmp_path / "ix" / "PREVIOUS").read_text()
        / selftrain.MODEL_DIR / selftrain.INFO_FILE).read_text()
    again = Retriever.load(tmp_path / "ix")  # a restart: the model comes from the new generation
    assert again.encoder is not None and str(again.mode) == "hybrid (self-trained on this corpus)"
    third = build_index(corpus, tmp_path / "ix", load_splitter(), None, self_train=fast, progress=False)
    assert third.trained is None and third.added == 0  # the CLI's next run finds the model: no retraining


# --- segments ------------------------------------------------------------------------------------

def test_keyword_postings_score_as_bm25s_does():
    """The postings hold BM25's tf part and the idf is applied at query time: together they give
    bm25s's scores (Lucene's variant, the project's k1 and b)."""
    import bm25s
    rng = np.random.default_rng(0)
    docs = [[f"w{int(t)}" for t in rng.zipf(1.5, size=rng.integers(3, 30)) % 200] for _ in range(300)]
    vocab = {t: i for i, t in enumerate(sorted({t for d in docs for t in d}))}
    doc = np.concatenate([np.full(len(d), i) for i, d in enumerate(docs)]).astype(np.int32)
    term = np.array([vocab[t] for d in docs for t in d], dtype=np.int32)
    p = index_mod.bm25_postings(doc, term, len(docs), len(vocab), **index_mod.BM25_PARAMS)
    reference = bm25s.BM25(**index_mod.BM25_PARAMS)
    reference.index(docs, show_progress=False)
    for query in (["w1"], ["w3", "w17"], ["w2", "w2", sorted(vocab)[-1]]):
        ours = np.zeros(len(docs), np.float32)
        for t in query:
            idx, tfc = p.of(vocab[t])
            ours[idx] += index_mod.idf(p.df(vocab[t]), len(docs)) * tfc / 255
        assert np.allclose(ours, reference.get_scores(query), rtol=2e-3, atol=1e-3)


def _linked(a, b) -> bool:
    return a.stat().st_ino == b.stat().st_ino


def test_an_add_writes_a_segment_and_links_the_others(tmp_path, corpus_dir):
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    build_index(corpus, tmp_path / "ix", load_splitter(), None, progress=False)
    first = live_generation(tmp_path / "ix")
    (old,) = read_manifest(tmp_path / "ix").segments
    (corpus / "new.txt").write_text("title: Aid\n\nAid convoys reached Idlib on Tuesday.")
    report = build_index(corpus, tmp_path / "ix", load_splitter(), None, progress=False)
    gen = live_generation(tmp_path / "ix")
    names = [s["name"] for s in report.manifest.segments]
    assert names[0] == old["name"] and len(names) == 2 and report.added == 1
    assert all(_linked(first / old["name"] / f.name, f) for f in (gen / old["name"]).iterdir())
    assert [s["sentences"] for s in report.manifest.segments] == [26, 1]


def test_a_changed_article_is_masked_in_its_old_segment(tmp_path, corpus_dir, monkeypatch):
    monkeypatch.setattr(index_mod, "EXPUNGE_SHARE", 1.0)  # else a third of its articles gone rewrites it
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    (corpus / "aid.txt").write_text("title: Aid\n\nAid convoys reached Idlib on Tuesday. Doctors said supplies ran low.")
    build_index(corpus, tmp_path / "ix", load_splitter(), None, progress=False)
    (corpus / "aid.txt").write_text("title: Aid\n\nAid convoys reached Idlib on Wednesday.")
    report = build_index(corpus, tmp_path / "ix", load_splitter(), None, progress=False)
    old, new = report.manifest.segments
    assert (old["deleted"], old["deleted_sentences"], new["sentences"]) == (1, 2, 1)
    assert report.manifest.sentences == 27 and report.updated == 1
    r = Retriever.load(tmp_path / "ix")
    assert [h.text for h in r.search("aid convoys doctors supplies", k=3) if h.article_id == "aid"] == [
        "Aid convoys reached Idlib on Wednesday."]
    assert r.article("aid").text == "Aid convoys reached Idlib on Wednesday."


def test_segments_answer_as_one_index(tmp_path, corpus_dir, monkeypatch):
    """Written in small segments (a flush every few sentences), the index finds what one segment finds."""
    one = build_index(corpus_dir, tmp_path / "one", load_splitter(), None, progress=False)
    monkeypatch.setattr(index_mod, "FLUSH_SENTENCES", 5)
    many = build_index(corpus_dir, tmp_path / "many", load_splitter(), None, progress=False)
    assert len(one.manifest.segments) == 1 and len(many.manifest.segments) == 2
    assert one.manifest.corpus_fingerprint == many.manifest.corpus_fingerprint
    a, b = Retriever.load(tmp_path / "one"), Retriever.load(tmp_path / "many")
    for q in ("How many civilians were killed near the hospital in Ariha?", "cluster munitions school",
              "Which human rights group accuses Russia?", "displaced people camps"):
        assert a.search(q, k=1)[0].passage == b.search(q, k=1)[0].passage
        assert {h.passage.sentence_id for h in a.search(q, k=3)} == {h.passage.sentence_id for h in b.search(q, k=3)}


def test_the_merge_policy_folds_small_segments_and_drops_deleted_rows(tmp_path, corpus_dir, monkeypatch):
    monkeypatch.setattr(index_mod, "MERGE_FACTOR", 2)
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    build_index(corpus, tmp_path / "ix", load_splitter(), None, progress=False)
    merged = 0
    for i, text in enumerate(("Aid convoys reached Idlib on Tuesday.", "Flooding closed the coastal road.",
                              "A ceasefire began in Idlib at midnight.")):
        (corpus / f"n{i}.txt").write_text(text)
        report = build_index(corpus, tmp_path / "ix", load_splitter(), None, progress=False)
        merged += report.merged
        assert len(report.manifest.segments) <= 3
    # the one-sentence segments merge among themselves, never into the 26-sentence one (another tier)
    assert merged >= 2 and report.manifest.segments[0]["sentences"] == 26
    assert (report.manifest.articles, report.manifest.sentences) == (5, 29)
    (corpus / "n0.txt").write_text("Aid convoys reached Idlib on Friday.")
    report = build_index(corpus, tmp_path / "ix", load_splitter(), None, progress=False)
    assert all(s["deleted"] == 0 for s in report.manifest.segments)  # a merge left no masked row behind
    r = Retriever.load(tmp_path / "ix")
    assert r.search("aid convoys", k=1)[0].text == "Aid convoys reached Idlib on Friday."
    assert r.search("ceasefire midnight", k=1)[0].article_id == "n2"
    assert sorted(r.article_ids) == sorted(["000_24bd21a41d8b3e79", "002_3d1258f428892b47", "n0", "n1", "n2"])


def test_a_store_of_another_schema_is_refused(keyword_index):
    (seg,) = read_manifest(keyword_index).segments
    path = live_generation(keyword_index) / seg["name"] / "store.sqlite"
    import sqlite3
    copy = path.parent.parent.parent / "other.sqlite"
    shutil.copyfile(path, copy)
    db = sqlite3.connect(copy)
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with pytest.raises(store.StoreError, match="schema version 1"):
        store.connect(copy, readonly=True)
    copy.unlink()


def test_unchanged_files_are_not_read_again(tmp_path, corpus_dir, monkeypatch):
    from qa import articles
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    build_index(corpus, tmp_path / "ix", load_splitter(), None, progress=False)
    read = []
    original = articles.CorpusReader.articles

    def spy(self, files=None):
        read.extend(f.rel for f in (files if files is not None else self.files))
        return original(self, files)
    monkeypatch.setattr(articles.CorpusReader, "articles", spy)
    (corpus / "new.txt").write_text("Aid convoys reached Idlib on Tuesday.")
    report = build_index(corpus, tmp_path / "ix", load_splitter(), None, progress=False)
    assert read == ["new.txt"] and report.added == 1
    read.clear()
    import os
    os.utime(corpus / "new.txt", ns=(1, 1))  # touched, same bytes: read (the time changed), nothing to do
    report = build_index(corpus, tmp_path / "ix", load_splitter(), None, progress=False)
    assert read == [] and (report.added, report.updated) == (0, 0)


def test_an_export_bigger_than_the_article_limit_is_indexed_whole(tmp_path, monkeypatch):
    from qa import articles
    monkeypatch.setattr(articles, "MAX_ARTICLE_BYTES", 2_000)
    rows = [json.dumps({"id": f"a{i}", "text": f"Story {i}: the council met on day {i} and voted on the budget."})
            for i in range(2_000)]
    rows[700] = json.dumps({"id": "huge", "text": "Too long. " * 500})
    (tmp_path / "export.jsonl").write_text("\n".join(rows) + "\n")
    assert (tmp_path / "export.jsonl").stat().st_size > 50 * articles.MAX_ARTICLE_BYTES
    report = build_index(tmp_path / "export.jsonl", tmp_path / "ix", load_splitter(), None, progress=False)
    assert report.manifest.articles == 1_999 and any(":701" in p.path for p in report.problems)
    assert Retriever.load(tmp_path / "ix").search("council day 1234 budget", k=1)[0].article_id == "a1234"


def test_other_keyword_settings_index_everything_anew(tmp_path, corpus_dir, monkeypatch):
    build_index(corpus_dir, tmp_path / "ix", load_splitter(), None, progress=False)
    monkeypatch.setitem(index_mod.BM25_PARAMS, "k1", 0.5)
    with pytest.raises(IndexUnusable, match="other settings"):
        Retriever.load(tmp_path / "ix")
    report = build_index(corpus_dir, tmp_path / "ix", load_splitter(), None, progress=False)
    assert report.added == 2 and len(report.manifest.segments) == 1
    assert Retriever.load(tmp_path / "ix").search("cluster munitions school", k=1)


def test_each_outside_engine_is_imported_by_its_own_module():
    """SQL lives in the store, faiss and bm25s in the index module, Ray in qa.distributed: no other
    module of qa imports them, at the top or inside a function."""
    import ast

    owners = {"sqlite3": {"store"}, "faiss": {"index"}, "bm25s": {"index"}, "ray": {"distributed"}}
    found = []
    for path in sorted((Path(index_mod.__file__).parent).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                top = name.split(".")[0]
                if top in owners and path.stem not in owners[top]:
                    found.append(f"{path.name} imports {name}")
    assert found == []


TOWNS = ["Aleppo", "Hama", "Homs", "Daraa", "Raqqa", "Tartus", "Latakia", "Qamishli", "Deir", "Palmyra",
         "Manbij", "Afrin", "Kobani", "Saraqib", "Maarat", "Jisr", "Binnish", "Sarmada", "Atarib", "Salqin"]


def _towns(corpus: Path, version: str = "") -> None:
    """20 articles of 4 sentences, one per town, in one JSONL file (version: a change to half of them)."""
    rows = [{"id": f"town-{i}", "title": f"News from {t}", "source": "Wire", "published": "2021-06-01",
             "text": f"Water ran out in {t} on Monday{version if i % 2 else ''}. Trucks from the river reached "
                     f"{t} later. The mayor of {t} thanked the drivers. Schools in {t} stayed shut."}
            for i, t in enumerate(TOWNS)]
    (corpus / "towns.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _killed_at_segment(monkeypatch, n: int) -> None:
    """The build dies while writing its n-th segment (a kill, as far as the build can tell)."""
    finish, calls = index_mod.SegmentWriter.finish, []

    def dying(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt("killed")
        return finish(self, *args, **kwargs)

    monkeypatch.setattr(index_mod.SegmentWriter, "finish", dying)


def test_a_killed_long_build_keeps_what_it_wrote_and_the_next_goes_on_from_there(tmp_path, corpus_dir,
                                                                                 tiny_model, monkeypatch):
    """A build publishes each segment it has written: killed in its third, the index holds the first
    two, and the next build writes and embeds only the rest, into the index one build makes."""
    encoder = load_encoder(str(tiny_model))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _towns(corpus)
    monkeypatch.setattr(index_mod, "FLUSH_SENTENCES", 16)  # 4 articles a segment: 5 segments
    whole = build_index(corpus, tmp_path / "whole", load_splitter(), encoder, progress=False)
    assert whole.added == 20 and whole.merged == 4  # five written, four merged at the end

    with monkeypatch.context() as mp:
        _killed_at_segment(mp, 3)
        with pytest.raises(KeyboardInterrupt):
            build_index(corpus, tmp_path / "ix", load_splitter(), encoder, progress=False)
    kept = Retriever.load(tmp_path / "ix", encoder=encoder)
    assert (kept.manifest.articles, kept.manifest.sentences) == (8, 32)
    assert sorted(kept.article_ids) == sorted(f"town-{i}" for i in range(8))
    assert kept.search("water in Homs", k=1)[0].article_id == "town-2"
    assert len(list((tmp_path / "ix").glob("gen-*"))) == 2  # the two published; the killed one's folder gone

    prepared = []
    real_prepare = index_mod.prepare
    monkeypatch.setattr(index_mod, "prepare", lambda a, s: prepared.append(a.id) or real_prepare(a, s))
    report = build_index(corpus, tmp_path / "ix", load_splitter(), encoder, progress=False)
    assert sorted(prepared) == sorted(f"town-{i}" for i in range(8, 20))
    assert (report.added, report.unchanged, report.embedded) == (12, 8, 48)
    r, one = Retriever.load(tmp_path / "ix", encoder=encoder), Retriever.load(tmp_path / "whole", encoder=encoder)
    assert [s["sentences"] for s in r.manifest.segments] == [s["sentences"] for s in one.manifest.segments]
    assert r.manifest.corpus_fingerprint == one.manifest.corpus_fingerprint
    for t in TOWNS:
        q = f"When did water run out in {t}?"
        assert [(h.passage, round(h.score, 5)) for h in r.search(q, k=3)] == \
            [(h.passage, round(h.score, 5)) for h in one.search(q, k=3)], q


def test_a_build_published_midway_holds_each_article_once(tmp_path, monkeypatch):
    """An update killed after its first segment: each article is there once, in its new version
    where that was written, else in its old one; the next build finishes the update."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _towns(corpus)
    build_index(corpus, tmp_path / "ix", load_splitter(), None, progress=False)
    _towns(corpus, version=", a day early")
    monkeypatch.setattr(index_mod, "FLUSH_SENTENCES", 16)
    with monkeypatch.context() as mp:
        _killed_at_segment(mp, 2)
        with pytest.raises(KeyboardInterrupt):
            build_index(corpus, tmp_path / "ix", load_splitter(), None, progress=False)
    r = Retriever.load(tmp_path / "ix")
    assert sorted(r.article_ids) == sorted(f"town-{i}" for i in range(20)) and r.manifest.articles == 20
    new = {i for i in range(20) if "a day early" in r.article(f"town-{i}").text}
    assert new and new < {i for i in range(20) if i % 2}  # the changed articles of the first segment only
    report = build_index(corpus, tmp_path / "ix", load_splitter(), None, progress=False)
    r = Retriever.load(tmp_path / "ix")
    assert r.manifest.articles == 20 and report.updated == 10 - len(new)
    assert {i for i in range(20) if "a day early" in r.article(f"town-{i}").text} == {i for i in range(20) if i % 2}
    before = read_manifest(tmp_path / "ix")
    with monkeypatch.context() as mp:  # a rebuild publishes once: the index it replaces stays whole until then
        _killed_at_segment(mp, 2)
        with pytest.raises(KeyboardInterrupt):
            build_index(corpus, tmp_path / "ix", load_splitter(), None, rebuild=True, progress=False)
    assert read_manifest(tmp_path / "ix") == before


def test_known_articles_are_told_apart_by_id_and_version():
    """known_keys / is_known: what a build sends to where articles are prepared, to skip those it keeps."""
    from qa.index import is_known, known_key, known_keys

    ids = [f"a{i}" for i in range(2000)]
    nul = next(i for i in ids if known_key(i, "v1").endswith(b"\0"))  # numpy drops trailing NULs on reading
    keys = known_keys((i, "v1") for i in ids)
    assert len(keys) == 2000 and all(is_known(keys, i, "v1") for i in ids) and is_known(keys, nul, "v1")
    assert not any(is_known(keys, i, "v2") for i in ids) and not is_known(keys, "b0", "v1")
    assert not is_known(known_keys([]), "a0", "v1")


def _kw(corpus, index):
    return build_index(corpus, index, load_splitter(), None, mode_reason="keyword-only: test", progress=False)


def _texts(index) -> dict[str, str]:
    r = Retriever.load(index)
    try:
        return {i: r.article(i).text for i in r.article_ids}
    finally:
        r.close()


def test_a_copy_is_indexed_once_its_original_is_deleted(tmp_path):
    """A file whose only article repeats another file's is read again: when the original goes, the copy
    is indexed (it was recorded as indexed and never read again: the fact was lost)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("e.txt", "f.txt"):
        (corpus / name).write_text("The Garonne flooded 12 villages on Monday.\n")
    assert _kw(corpus, tmp_path / "ix").duplicates == (("f", "e"),)
    (corpus / "e.txt").unlink()
    report = _kw(corpus, tmp_path / "ix")
    assert (report.added, report.removed) == (1, 1)
    assert _texts(tmp_path / "ix") == {"f": "The Garonne flooded 12 villages on Monday."}


def test_a_moved_corpus_folder_takes_its_articles_along(tmp_path):
    """Stored origins are absolute paths: after the folder moves, an edit and a deletion still apply
    (the same id from a file that is gone is replaced, not refused as a clash)."""
    old, new = tmp_path / "old" / "news", tmp_path / "new" / "news"
    old.mkdir(parents=True)
    (old / "tram.txt").write_text("The Lyon tram line cost 5 million euros.\n")
    (old / "bus.txt").write_text("The Lyon bus line cost 2 million euros.\n")
    _kw(old, tmp_path / "ix")
    old.parent.rename(tmp_path / "new")
    (new / "tram.txt").write_text("The Lyon tram line cost 7 million euros.\n")
    report = _kw(new, tmp_path / "ix")
    assert not report.problems and report.updated == 2
    assert _texts(tmp_path / "ix")["tram"] == "The Lyon tram line cost 7 million euros."
    (new / "tram.txt").unlink()
    _kw(new, tmp_path / "ix")
    assert set(_texts(tmp_path / "ix")) == {"bus"}


def test_an_index_inside_its_corpus_folder_is_not_read_as_articles(tmp_path):
    corpus = tmp_path / "articles"
    corpus.mkdir()
    (corpus / "a.txt").write_text("The Bergen fish market sold 20 tonnes of cod.\n")
    _kw(corpus, corpus / "index")
    (corpus / "b.txt").write_text("The Oslo opera sold 900 tickets.\n")
    report = _kw(corpus, corpus / "index")
    assert set(_texts(corpus / "index")) == {"a", "b"} and not report.problems


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied"),
                                   FileNotFoundError(2, "No such file or directory")])
def test_a_file_that_cannot_be_read_is_skipped_and_what_it_held_is_kept(tmp_path, corpus_dir, monkeypatch, error):
    """Unreadable, or gone between listing and reading: a problem line, the rest indexed, nothing lost."""
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    _kw(corpus, tmp_path / "ix")
    before = _texts(tmp_path / "ix")
    (corpus / "new.txt").write_text("The Kosice mine employs 300 people.\n")
    first = sorted(corpus.glob("0*.txt"))[0]
    first.write_text(first.read_text() + "\nA line added later.\n")
    sha1 = index_mod.articles.CorpusFile.sha1

    def refuse(self):
        if self.path.name == first.name:
            raise error
        return sha1(self)
    monkeypatch.setattr(index_mod.articles.CorpusFile, "sha1", refuse)
    report = _kw(corpus, tmp_path / "ix")
    assert [p.path for p in report.problems] == [first.name] and "cannot read file" in report.problems[0].message
    assert _texts(tmp_path / "ix") == {**before, "new": "The Kosice mine employs 300 people."}


def test_a_file_name_that_is_not_utf8_is_skipped_with_a_problem(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.txt").write_text("The Jihlava bridge has 4 arches.\n")
    try:
        (corpus / "caf\udce9.txt").write_text("The Brno dam has 9 gates.\n")
    except (UnicodeEncodeError, OSError):
        pytest.skip("this file system does not take file names that are not UTF-8")
    report = _kw(corpus, tmp_path / "ix")
    assert set(_texts(tmp_path / "ix")) == {"good"}
    assert [p.message for p in report.problems] == ["skipped: the file name is not valid UTF-8; rename the file"]


@pytest.mark.parametrize("published, day", [("2020-05-11", 20200511), ("2020-05-11T10:00:00+00:00", 20200511),
                                             ("2020-13-45", 0), ("2020-02-30", 0), ("last Tuesday", 0), ("", 0)])
def test_only_real_days_are_dates_for_filters(published, day):
    assert index_mod._date_number(published) == day


def test_a_damaged_current_is_a_clear_error_and_a_rebuild_mends_it(tmp_path, corpus_dir):
    _kw(corpus_dir, tmp_path / "ix")
    gens = sorted(p.name for p in (tmp_path / "ix").glob("gen-*"))
    (tmp_path / "ix" / "CURRENT").write_bytes(b"\xff\xfe garbage \x00")
    for attempt in (lambda: Retriever.load(tmp_path / "ix"), lambda: _kw(corpus_dir, tmp_path / "ix")):
        with pytest.raises(IndexUnusable, match="CURRENT is damaged.*--rebuild"):
            attempt()
    assert sorted(p.name for p in (tmp_path / "ix").glob("gen-*")) == gens  # nothing was deleted meanwhile
    build_index(corpus_dir, tmp_path / "ix", load_splitter(), None, rebuild=True, progress=False)
    assert len(_texts(tmp_path / "ix")) == 2
