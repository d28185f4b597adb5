"""Serving on Ray (qa.cluster): the segments of an index searched by Ray actors give the same hits
as one process, and questions keep being answered when an actor dies.

A local Ray cluster of 2 CPUs is started once for the module. Where Ray is not installed or cannot
start, the tests are skipped with the reason; QA_REQUIRE_RAY=1 (CI) makes that a failure.
The index: the default corpus and 300 BBC News articles from ../shared/data when present (else
articles recombined from the default corpus's sentences), in several segments, one article deleted.
"""
from __future__ import annotations

import csv
import gzip
import itertools
import json
import random
import shutil
import threading
import time
from pathlib import Path

import pytest

from conftest import CORPUS, SHARED_DATA
from qa import index as index_mod
from qa import retrieve
from qa.expand import expand
from qa.index import Manifest, build_index, live_generation, read_manifest
from qa.retrieve import Local, Retriever
from qa.shard import Shard
from qa.sentences import load_splitter

QUESTIONS = 200


def _news(n: int) -> list[dict]:
    bbc = SHARED_DATA / "news" / "bbc-news.csv.gz"
    if bbc.exists():
        with gzip.open(bbc, "rt", encoding="utf-8", newline="") as f:
            rows = list(itertools.islice(csv.DictReader(f), n))
        return [{"id": r["id"], "title": r["title"], "source": ["BBC", "Wire"][i % 2], "text": r["text"],
                 "published": f"20{10 + i % 10}-0{1 + i % 9}-1{i % 10}"} for i, r in enumerate(rows)]
    splitter, rng = load_splitter(), random.Random(0)
    pool = [s.text for p in sorted(CORPUS.glob("*.txt")) for s in splitter.split("x", p.read_text(encoding="utf-8"))]
    return [{"id": f"mix/{i}", "title": f"Mix {i}", "source": ["Mix", "Wire"][i % 2],
             "published": f"20{10 + i % 10}-0{1 + i % 9}-1{i % 10}",
             "text": "\n\n".join(" ".join(rng.sample(pool, 3)) for _ in range(rng.randint(2, 6)))} for i in range(n)]


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    """A keyword-only index in several segments (a small flush size), one article deleted later."""
    root = tmp_path_factory.mktemp("serve")
    corpus, out = root / "corpus", root / "index"
    shutil.copytree(CORPUS, corpus)
    news = _news(300)
    for part, rows in (("a", news[:150]), ("b", news[150:])):
        (corpus / f"{part}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(index_mod, "FLUSH_SENTENCES", 1_500)
        build_index(corpus, out, load_splitter(), None, mode_reason="keyword-only: test", progress=False)
        lines = (corpus / "b.jsonl").read_text(encoding="utf-8").splitlines()
        (corpus / "b.jsonl").write_text("\n".join(lines[1:]) + "\n", encoding="utf-8")  # an article removed
        build_index(corpus, out, load_splitter(), None, mode_reason="keyword-only: test", progress=False)
    manifest = read_manifest(out)
    assert len(manifest.segments) >= 3 and any(s["deleted"] for s in manifest.segments)
    return out


@pytest.fixture(scope="module")
def hybrid_segments(tmp_path_factory, tiny_model) -> Path:
    """A hybrid index (the test model) in several segments."""
    from qa.embed import load_encoder
    root = tmp_path_factory.mktemp("serve-hybrid")
    corpus, out = root / "corpus", root / "index"
    shutil.copytree(CORPUS, corpus)
    (corpus / "news.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _news(120)), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(index_mod, "FLUSH_SENTENCES", 1_500)
        build_index(corpus, out, load_splitter(), load_encoder(str(tiny_model)), progress=False)
    assert len(read_manifest(out).segments) >= 2
    return out


@pytest.fixture(scope="module")
def self_trained_segments(tmp_path_factory) -> Path:
    """An index with a model self-trained on it (small, fast settings), in several segments."""
    from qa import selftrain
    root = tmp_path_factory.mktemp("serve-self")
    corpus, out = root / "corpus", root / "index"
    corpus.mkdir()
    (corpus / "news.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _news(120)), encoding="utf-8")
    fast = selftrain.Training(dim=16, vocab_size=2000, window=5, pair_views=2000, batch_size=64, min_sentences=100,
                              device="cpu")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(index_mod, "FLUSH_SENTENCES", 1_500)
        report = build_index(corpus, out, load_splitter(), None, self_train=fast, progress=False)
    assert report.manifest.model == selftrain.SELF_TRAINED and len(report.manifest.segments) >= 2
    return out


def _questions(r: Retriever, n: int) -> list[str]:
    """Questions made of words of the index's sentences (every 7th sentence's first words and a few
    of its later ones), so that hits come from every segment."""
    texts = [t for *_, t in r.sentences()]
    out = []
    for t in texts[::max(1, len(texts) // n)][:n]:
        words = t.split()
        out.append(" ".join(words[:4] + words[-3:]))
    return out


def _hits(hits) -> list[tuple]:
    return [(h.passage, h.score, h.support, h.dense, h.before, h.after, h.sources) for h in hits]


class _AsActors(Local):
    """Shards in this process answering as Ray actors do (remote: they pick candidates in the call
    that scores the question, and send the rows grouping will read)."""
    remote = True


@pytest.mark.parametrize("guess", [1, 2])
@pytest.mark.parametrize("kind", ["keyword", "hybrid"])
def test_shards_picks_are_kept_only_when_they_hold_the_best(request, monkeypatch, kind, guess):
    """Two shards pick candidates by their own best scores; the retriever keeps their picks when no
    candidate left out can reach the pool, and asks again otherwise: the same hits either way (with
    a model: the keyword picks fill the pool with sentences scoring 0, then the vectors' best join)."""
    outcomes = {"kept": 0, "asked again": 0}
    picks = retrieve._KeywordQuery._guess

    def counted(self, picked, first):
        out = picks(self, picked, first)
        outcomes["asked again" if out is None else "kept"] += 1
        return out

    monkeypatch.setattr(retrieve, "GUESS", guess)
    monkeypatch.setattr(retrieve._KeywordQuery, "_guess", counted)
    path = request.getfixturevalue("index" if kind == "keyword" else "hybrid_segments")
    local = Retriever.load(path)
    gen = live_generation(path)
    manifest = Manifest.read(gen / "manifest.json")
    names = [s["name"] for s in manifest.segments]
    half = len(names) // 2
    dense = local.encoder is not None
    assert dense == (kind == "hybrid")
    split = Retriever(gen, manifest, local.encoder, weights=local.weights,
                      shards=_AsActors([Shard(gen, names[:half], 0, dense), Shard(gen, names[half:], half, dense)]))
    try:
        for q in _questions(local, QUESTIONS):
            assert _hits(split.search(q, k=10)) == _hits(local.search(q, k=10)), q
            assert _hits(split.search(q, k=5, since="2013-01-01")) == _hits(local.search(q, k=5, since="2013-01-01")), q
        assert outcomes["kept"] > 0 and outcomes["asked again"] > 0, outcomes
    finally:
        split.close()
        local.close()


@pytest.mark.parametrize("actors", [1, 2])
def test_ray_actors_give_the_same_hits_as_one_process(ray_cluster, index, actors):
    """Two actors: the retriever merges their answers; one: it holds every segment and runs the
    whole search itself."""
    local = Retriever.load(index)
    remote = Retriever.load(index, ray="local", actors=actors)
    try:
        assert len(remote.shards.actors) == actors and remote.shards.whole == (actors == 1)
        questions = _questions(local, QUESTIONS)
        assert len(questions) == QUESTIONS
        for q in questions:
            assert _hits(remote.search(q, k=10)) == _hits(local.search(q, k=10)), q
        for q in questions[:40]:
            for filters in ({"since": "2013-01-01", "until": "2016-12-31"}, {"sources": ["Wire"]}):
                assert _hits(remote.search(q, k=5, **filters)) == _hits(local.search(q, k=5, **filters)), (q, filters)
        assert remote.stats() == local.stats()
        assert remote.article_ids == local.article_ids
        aid = local.article_ids[-1]
        assert remote.article(aid) == local.article(aid) is not None
        assert remote.search("") == local.search("") and remote.search("zzzz qqqq") == []
    finally:
        remote.close()


@pytest.mark.parametrize("actors", [1, 2])
def test_questions_are_answered_while_an_actor_is_killed(ray_cluster, index, actors):
    """Ray restarts a killed actor and sends it again what it had not answered: no question fails."""
    local = Retriever.load(index)
    remote = Retriever.load(index, ray="local", actors=actors)
    questions = _questions(local, 200)
    expected = [_hits(local.search(q, k=10)) for q in questions]
    answers, errors = [], []

    def ask():
        for q in questions:
            try:
                answers.append(_hits(remote.search(q, k=10)))
            except Exception as e:  # a failed question: what the test counts
                errors.append(e)

    asking = threading.Thread(target=ask)
    try:
        asking.start()
        while len(answers) < 20 and asking.is_alive():
            threading.Event().wait(0.01)
        remote.shards.ray.kill(remote.shards.actors[0], no_restart=False)
        killed_at = len(answers)
        asking.join(timeout=600)
        assert not asking.is_alive()
        assert killed_at < len(questions)  # the actor died while questions were being asked
        assert errors == []
        assert answers == expected
    finally:
        remote.close()


@pytest.mark.parametrize("path, actors", [("hybrid_index", None), ("hybrid_segments", 2)])
def test_hybrid_search_through_ray_is_the_same(ray_cluster, request, path, actors):
    """With a model: the question's vector is searched in each actor's FAISS indexes, and the
    candidates' cosines come from the actors' vectors (one actor holding every segment: it runs
    the whole search with the vector the driver encoded)."""
    index = request.getfixturevalue(path)
    local = Retriever.load(index)
    remote = Retriever.load(index, ray="local", encoder=local.encoder, actors=actors)
    try:
        assert remote.mode == local.mode and remote.encoder is not None
        assert remote.shards.whole == (actors is None)  # one machine: one actor by default
        texts = [t for *_, t in local.sentences()]
        questions = [" ".join(t.split()[:6]) for t in texts[::max(1, len(texts) // 60)]] + [
            "How many civilians were killed near the hospital in Ariha?", "Which country won the World Cup?"]
        for q in questions:
            got = remote.search(q, k=5)
            assert _hits(got) == _hits(local.search(q, k=5)), q
            assert all(h.dense is not None for h in got)
        found = 0
        for q in questions[::4]:  # the model's candidates filtered in the actors as in one process
            for filters in ({"since": "2013-01-01", "until": "2016-12-31"}, {"sources": ["Wire"]}):
                got = remote.search(q, k=5, **filters)
                assert _hits(got) == _hits(local.search(q, k=5, **filters)), (q, filters)
                found += len(got)
        assert found or path == "hybrid_index"  # the default corpus has no article in those filters
    finally:
        remote.close()


@pytest.mark.parametrize("actors", [1, 2])
def test_self_trained_search_through_ray_is_the_same(ray_cluster, self_trained_segments, monkeypatch, actors):
    """A self-trained index expands weakly matched questions with the model's word neighbours: one
    actor holding every segment loads the model from the index for them and runs whole searches;
    two actors leave the expansion to the driver."""
    expanded = []

    def counted(*args):
        extra = expand(*args)
        expanded.append(bool(extra))
        return extra

    local = Retriever.load(self_trained_segments)
    remote = Retriever.load(self_trained_segments, ray="local", encoder=local.encoder, actors=actors)
    try:
        assert local.neighbours is not None and remote.shards.whole == (actors == 1)
        texts = [t for *_, t in local.sentences()]
        questions = [" ".join(t.split()[2:7]) for t in texts[::max(1, len(texts) // 40)]] + [
            "What did the minister say about the film?", "Which team won the league?"]
        for q in questions:
            got = remote.search(q, k=5)
            with monkeypatch.context() as mp:
                mp.setattr(retrieve, "expand", counted)
                assert _hits(got) == _hits(local.search(q, k=5)), q
        assert any(expanded)  # some questions were expanded, in one process and through Ray alike
    finally:
        remote.close()


def test_an_upload_to_a_chat_served_on_ray_is_answered_by_the_new_actors(ray_cluster, tmp_path, corpus_dir,
                                                                          monkeypatch):
    """`qa serve --ray`: an article added in the chat is indexed, the new generation is served by
    actors of its own, and the old generation's actors are retired once replaced."""
    from qa import uploads
    from qa.answer import answer
    from qa.uploads import LiveIndex

    monkeypatch.setattr(uploads, "RETIRE_AFTER", 0.0)
    corpus, out = tmp_path / "corpus", tmp_path / "index"
    shutil.copytree(corpus_dir, corpus)
    splitter = load_splitter()
    build_index(corpus, out, splitter, None, mode_reason="keyword-only: test", progress=False)
    live = LiveIndex(Retriever.load(out, ray="local"), out, corpus, splitter)
    old = live.retriever
    try:
        upload = tmp_path / "upload"
        upload.write_text("title: Flood\nsource: River News\npublished: 2021-03-02\n\n"
                          "The river Oder flooded Frankfurt on Tuesday.", encoding="utf-8")
        (added,) = live.add_files([("flood.txt", upload)])
        assert added.accepted, added
        new = live.retriever
        assert new is not old and new.ray == "local" and new.shards.remote and new.stats().articles == 3
        ans = answer(new, "Which town did the river Oder flood?")
        assert not ans.abstained and ans.citations[0].passage.source == "River News"
        assert not answer(new, "How many civilians were killed near the hospital in Ariha?").abstained
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _retired(old):
            time.sleep(0.2)
        assert _retired(old)  # the old generation's actors are gone once the new ones serve
        assert new.shards.call("counts")  # the new ones answer
    finally:
        live.retriever.close()


def _retired(r: Retriever) -> bool:
    """Whether every Ray actor of r is gone."""
    from ray.exceptions import RayActorError
    for a in r.shards.actors:
        try:
            r.shards.ray.get(a.call.remote("counts"))
            return False
        except RayActorError:
            pass
    return True
