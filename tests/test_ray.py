"""Ingest on Ray (qa.distributed): the index `qa index --ray` builds is the one a single process builds.

A local Ray cluster of 2 CPUs is started once for the module. Where Ray is not installed or cannot
start, the tests that need it are skipped with the reason; QA_REQUIRE_RAY=1 (CI) makes that a failure.
The corpus: the default corpus, 300 BBC News articles from ../shared/data when present (else articles
recombined from the default corpus's sentences) in a .jsonl and a .csv, a file with bad lines and a
reused id, a binary file and a duplicate article.
"""
from __future__ import annotations

import csv
import dataclasses
import gzip
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import CORPUS, ROOT, SHARED_DATA
from qa import index as index_mod
from qa import store
from qa.embed import DEFAULT_MODEL, ModelUnavailable, load_encoder
from qa.index import build_index, live_generation, open_segments, read_manifest
from qa.retrieve import Retriever
from qa.sentences import Splitter, load_splitter

BBC_ARTICLES = 300
QUESTIONS = 500
FLUSH = 1_500  # sentences per segment in these builds: several segments, and a merge


@pytest.fixture(scope="module")
def cluster(ray_cluster) -> str:
    """The local Ray cluster's address (conftest.ray_cluster)."""
    return ray_cluster


def _news(n: int) -> list[dict]:
    bbc = SHARED_DATA / "news" / "bbc-news.csv.gz"
    if bbc.exists():
        with gzip.open(bbc, "rt", encoding="utf-8", newline="") as f:
            return [{"id": r["id"], "title": r["title"], "source": "BBC", "text": r["text"]}
                    for r in itertools.islice(csv.DictReader(f), n)]
    splitter, rng = load_splitter(), random.Random(0)
    pool = [s.text for p in sorted(CORPUS.glob("*.txt")) for s in splitter.split("x", p.read_text(encoding="utf-8"))]
    return [{"id": f"mix/{i}", "title": f"Mix {i}", "source": "Mix",
             "text": "\n\n".join(" ".join(rng.sample(pool, 3)) for _ in range(rng.randint(2, 6)))} for i in range(n)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ray") / "corpus"
    shutil.copytree(CORPUS, root)
    news = _news(BBC_ARTICLES)
    half = len(news) // 2
    (root / "news").mkdir()
    (root / "news" / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in news[:half]), encoding="utf-8")
    with open(root / "news" / "b.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, ["id", "title", "source", "text"])
        w.writeheader()
        w.writerows(news[half:] + [{**news[3], "id": "copy-of-3"}])  # a duplicate: indexed once
    (root / "news" / "c.jsonl").write_text(
        json.dumps({"id": "c1", "text": "A short article. It has two sentences."}) + "\n{not json\n"
        + json.dumps({"id": "c2"}) + "\n" + json.dumps({"id": "c1", "text": "Another text, same id."}) + "\n",
        encoding="utf-8")
    (root / "binary.txt").write_bytes(b"\x00\x01\x02binary")
    return root


def _build(corpus: Path, out: Path, encoder=None, ingest=None, splitter: Splitter | None = None,
           rebuild: bool = False):
    with pytest.MonkeyPatch.context() as m:
        m.setattr(index_mod, "FLUSH_SENTENCES", FLUSH)
        return build_index(corpus, out, splitter or load_splitter(), encoder, mode_reason="keyword-only: test",
                           rebuild=rebuild, progress=False, ingest=ingest)


def contents(index: Path) -> dict:
    """What an index holds, segment by segment: rows, texts, tokens, vocabulary, keyword postings, vectors."""
    m = read_manifest(index)
    out = {"manifest": {k: getattr(m, k) for k in ("articles", "sentences", "corpus_fingerprint", "model", "dim",
                                                     "faiss_index", "splitter")},
           "segments": [(s["sentences"], s["articles"], s["deleted"], s["fingerprint"]) for s in m.segments],
           "rows": [], "keyword": [], "vectors": []}
    for seg in open_segments(live_generation(index), m):
        out["rows"].append(list(store.sentences(seg.db)))
        out["keyword"].append([seg.terms, seg.token_ids.tolist(), seg.token_ptr.tolist(), seg.sources,
                               seg.article_date.tolist()] + [(p.indptr.tolist(), p.indices.tolist(), p.tfc.tolist())
                                                             for p in seg.levels.values()])
        if seg.faiss is not None:
            out["vectors"].append(seg.vectors(np.arange(seg.sentences)))
        seg.close()
    return out


def questions(index: Path) -> list[str]:
    """The evaluation sets' questions, then the first words of sentences spread over the index: QUESTIONS."""
    qs = [json.loads(line)["question"] for name in ("bbc_news.jsonl", "idlib.jsonl")
          for line in (ROOT / "eval" / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [row[5] for rows in contents(index)["rows"] for row in rows]
    step = max(1, len(texts) // (QUESTIONS - len(qs)))
    qs += [" ".join(t.split()[:8]) for t in texts[::step]]
    return qs[:QUESTIONS]


def top10(index: Path, qs: list[str]) -> list[list[tuple]]:
    r = Retriever.load(index)
    try:
        return [[(h.passage.sentence_id, round(h.score, 4), tuple(p.sentence_id for p in h.sources))
                 for h in r.search(q, k=10)] for q in qs]
    finally:
        r.close()


def assert_same_index(local: Path, remote: Path, vectors_atol: float = 0.0) -> None:
    a, b = contents(local), contents(remote)
    assert len(a["segments"]) > 1, "the corpus should fill several segments"
    for key in ("manifest", "segments", "rows", "keyword"):
        assert a[key] == b[key], key
    assert len(a["vectors"]) == len(b["vectors"])
    for x, y in zip(a["vectors"], b["vectors"]):
        np.testing.assert_allclose(x, y, atol=vectors_atol, rtol=0)


@pytest.fixture(scope="module")
def keyword_builds(cluster, corpus, tmp_path_factory):
    from qa.distributed import RayIngest

    tmp = tmp_path_factory.mktemp("kw")
    local = _build(corpus, tmp / "local")
    remote = _build(corpus, tmp / "ray", ingest=RayIngest(workers=2))
    return tmp / "local", tmp / "ray", local, remote


def test_keyword_index_is_the_single_process_one(keyword_builds):
    local, remote, local_report, remote_report = keyword_builds
    assert_same_index(local, remote)
    # the default corpus's 2, the news, its copy and c1, less the duplicates
    assert read_manifest(remote).articles == 2 + BBC_ARTICLES + 2 - len(remote_report.duplicates)
    qs = questions(local)
    assert len(qs) == QUESTIONS
    assert top10(local, qs) == top10(remote, qs)


def test_problems_and_duplicates_are_reported_as_in_one_process(keyword_builds):
    *_, local_report, remote_report = keyword_builds
    assert remote_report.problems == local_report.problems
    assert remote_report.duplicates == local_report.duplicates
    assert ("copy-of-3", _news(4)[3]["id"]) in remote_report.duplicates
    where = {p.path for p in remote_report.problems}
    assert {"binary.txt", "news/c.jsonl:2", "news/c.jsonl:3", "news/c.jsonl:4"} <= where
    assert (remote_report.added, remote_report.embedded) == (local_report.added, 0)


def test_hybrid_index_with_a_model_is_the_single_process_one(cluster, corpus, tiny_model, tmp_path):
    from qa.distributed import RayIngest

    encoder = load_encoder(str(tiny_model))
    _build(corpus, tmp_path / "local", encoder)
    report = _build(corpus, tmp_path / "ray", encoder, ingest=RayIngest(workers=2))
    assert report.embedded == report.manifest.sentences
    assert_same_index(tmp_path / "local", tmp_path / "ray")
    qs = questions(tmp_path / "local")
    assert top10(tmp_path / "local", qs) == top10(tmp_path / "ray", qs)


@pytest.mark.slow
def test_default_model_gives_the_same_top10(cluster, corpus, tmp_path):
    """MiniLM in two actors against MiniLM in this process: batches differ, so vectors may differ in
    the last bits; the top 10 of every question must not."""
    from qa.distributed import RayIngest

    try:
        encoder = load_encoder(DEFAULT_MODEL, device="cpu")
    except ModelUnavailable as e:
        pytest.skip(str(e))
    _build(corpus, tmp_path / "local", encoder)
    _build(corpus, tmp_path / "ray", encoder, ingest=RayIngest(workers=2))
    assert_same_index(tmp_path / "local", tmp_path / "ray", vectors_atol=1e-5)
    qs = questions(tmp_path / "local")
    assert [[h[0] for h in hits] for hits in top10(tmp_path / "local", qs)] == \
        [[h[0] for h in hits] for hits in top10(tmp_path / "ray", qs)]


def test_an_incremental_build_on_ray_changes_only_what_changed(cluster, corpus, tmp_path):
    from qa.distributed import RayIngest

    work = tmp_path / "corpus"
    shutil.copytree(corpus, work)
    _build(work, tmp_path / "local")
    _build(work, tmp_path / "ray", ingest=RayIngest(workers=2))
    lines = (work / "news" / "a.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    changed = json.loads(lines[0]) | {"text": "A changed article. Its second sentence is new."}
    (work / "news" / "a.jsonl").write_text(json.dumps(changed) + "\n" + "".join(lines[1:]), encoding="utf-8")
    (work / "added.txt").write_text("title: Added\n\nAn added article says something new.", encoding="utf-8")
    a = _build(work, tmp_path / "local")
    b = _build(work, tmp_path / "ray", ingest=RayIngest(workers=2))
    assert (b.added, b.updated, b.removed) == (a.added, a.updated, a.removed) == (1, 1, 0)
    assert_same_index(tmp_path / "local", tmp_path / "ray")


def test_articles_the_index_holds_are_not_prepared_again(cluster, tmp_path):
    """An actor leaves unprepared (no sentences, tokens or vectors; only the text_key) the articles
    that the index holds as they are: an incremental build splits and embeds only what changed."""
    from qa.articles import CorpusReader, text_key
    from qa.distributed import ARTICLE, KNOWN, Prepare, read_rows
    from qa.index import known_keys

    rows = [{"id": f"n{i}", "title": f"N{i}", "text": f"Article {i} has a first sentence. And a second one."}
            for i in range(3)]
    (tmp_path / "n.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (f,) = CorpusReader(tmp_path / "n.jsonl").files
    (table,) = read_rows(((0, f),))
    hashes = table.column("content_hash").to_pylist()
    known = known_keys([("n1", hashes[1]), ("n2", "another version")])
    out = Prepare(load_splitter(), None, known)(table)
    assert out.column("kind").to_pylist() == [ARTICLE, KNOWN, ARTICLE]
    assert [len(x) for x in out.column("starts").to_pylist()] == [2, 0, 2]
    assert [len(x) for x in out.column("tokens").to_pylist()][1] == 0
    assert out.column("key").to_pylist()[1] == text_key(rows[1]["text"])
    everything = Prepare(load_splitter(), None, None)(table)
    assert everything.column("kind").to_pylist() == [ARTICLE] * 3


def test_a_worker_that_dies_is_replaced_and_its_articles_still_indexed(cluster, corpus, tmp_path):
    """The actor splitting one article kills its own process the first time: Ray restarts it and
    retries the batch, and the index is the same as ever."""
    from qa.distributed import RayIngest

    marker, victim = tmp_path / "died-once", _news(50)[40]["id"]

    @dataclasses.dataclass(frozen=True)
    class DiesOnce(Splitter):
        def split(self, article_id, text):
            if article_id == victim and not marker.exists():
                marker.touch()
                os._exit(1)
            return super().split(article_id, text)

    base = load_splitter()
    _build(corpus, tmp_path / "local")
    _build(corpus, tmp_path / "ray", ingest=RayIngest(workers=2), splitter=DiesOnce(base.name, base.tokenizer))
    assert marker.exists()
    assert_same_index(tmp_path / "local", tmp_path / "ray")


@pytest.mark.slow
def test_a_killed_ray_ingest_leaves_the_previous_index_usable(cluster, corpus, tmp_path):
    """`qa index --ray ADDRESS`, killed while it writes segments: the index it found still answers,
    the lock is free, and the next build finishes and clears what the killed one left."""
    from qa.distributed import RayIngest

    index = tmp_path / "index"
    shutil.copytree(CORPUS, tmp_path / "small")
    _build(tmp_path / "small", index)
    before, before_gen = read_manifest(index), live_generation(index).name
    slow = ("import sys, time; from qa import cli, index, sentences; index.FLUSH_SENTENCES = 200\n"
            "class Slow(sentences.Splitter):\n"
            "    def split(self, a, t):\n        time.sleep(0.05); return super().split(a, t)\n"
            "s = sentences.load_splitter(); cli.load_splitter = lambda: Slow(s.name, s.tokenizer)\n"
            "sys.exit(cli.main(sys.argv[1:]))")
    env = {**os.environ, "QA_MODEL": "none", "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen([sys.executable, "-c", slow, "index", str(corpus), "--index", str(index), "--rebuild",
                              "--ray", cluster, "--workers", "1"], env=env, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not [p for p in index.glob("gen-*/seg-*/segment.json") if p.parents[1].name != before_gen]:
        assert child.poll() is None, child.stdout.read().decode()
        assert time.monotonic() < deadline, "the Ray build wrote no segment in 240 s"
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert read_manifest(index) == before
    r = Retriever.load(index)
    assert r.search("Amnesty attacks schools hospitals Idlib", k=3)
    r.close()
    report = _build(corpus, index, ingest=RayIngest(workers=2), rebuild=True)
    assert report.manifest.articles == 2 + BBC_ARTICLES + 2 - len(report.duplicates)
    # the killed build's generation is gone; the new one and the one before it (PREVIOUS) stay
    assert {p.name for p in index.glob("gen-*")} == {live_generation(index).name, before_gen}


def test_without_ray_the_flag_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    from qa.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # an import of ray fails, as where it is not installed
    monkeypatch.setenv("QA_MODEL", "none")
    assert main(["index", str(CORPUS), "--index", str(tmp_path / "ix"), "--ray", "local"]) == 2
    err = capsys.readouterr().err
    assert "pip install" in err and ".[ray]" in err and "Traceback" not in err
    assert not (tmp_path / "ix" / "CURRENT").exists()


def test_qa_never_imports_ray_unless_asked():
    code = ("import sys, qa.cli, qa.answer, qa.index, qa.distributed, qa.chat; "
            "print('ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
