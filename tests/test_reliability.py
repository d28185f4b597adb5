"""Nothing lost, whatever happens: concurrent and killed builds and uploads, through the real `qa` command."""
from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qa.answer import answer
from qa.articles import load_corpus
from qa.index import generation_name, read_manifest
from qa.retrieve import Retriever

pytestmark = pytest.mark.slow
QA = [sys.executable, "-m", "qa.cli"]
SCHOOL = "Which school was hit with cluster munitions?"


def qa(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*QA, *args], capture_output=True, text=True, timeout=timeout)


def synthetic_corpus(folder: Path, n: int, seed: int = 0) -> Path:
    """n small articles about made-up towns, enough to make a build last about a second."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    things = "bridge harbour school market bakery tram library stadium clinic ferry".split()
    for i in range(n):
        body = " ".join(f"The {rng.choice(things)} of Town{i} reopened in {2000 + rng.randrange(20)} after "
                        f"{rng.randrange(2, 90)} days." for _ in range(6))
        (folder / f"town{i:04d}.txt").write_text(f"title: Town {i}\n\n{body}\n", encoding="utf-8")
    return folder


def leftovers(index: Path) -> set[str]:
    """Generation folders that are neither live nor the previous one."""
    keep = {generation_name(index), (index / "PREVIOUS").read_text().strip() if (index / "PREVIOUS").exists() else ""}
    return {p.name for p in index.glob("gen-*")} - keep


def test_two_qa_index_at_once(tmp_path, corpus_dir):
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    synthetic_corpus(corpus, 200)
    ix = tmp_path / "ix"
    # each build spends 20 ms on an article (4 s in all), so the one that starts second finds the lock taken
    slow = ("import sys, time; from qa import cli, sentences\n"
            "class Slow(sentences.Splitter):\n"
            "    def split(self, a, t):\n        time.sleep(0.02); return super().split(a, t)\n"
            "s = sentences.load_splitter(); cli.load_splitter = lambda: Slow(s.name, s.tokenizer)\n"
            "sys.exit(cli.main(sys.argv[1:]))")
    procs = [subprocess.Popen([sys.executable, "-c", slow, "index", str(corpus), "--index", str(ix), "--model", "none",
                               *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for extra in ((), ("--rebuild",))]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert any("waiting for another build" in err for _, err in outs)  # one waited for the other
    r = Retriever.load(ix)
    assert r.manifest.articles == 202 and not answer(r, SCHOOL).abstained and not leftovers(ix)


def test_killed_build_leaves_the_previous_index_and_the_next_build_removes_its_folder(tmp_path, corpus_dir):
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    ix = tmp_path / "ix"
    assert qa("index", str(corpus), "--index", str(ix), "--model", "none").returncode == 0
    before = qa("ask", SCHOOL, "--index", str(ix), "--json").stdout
    live = generation_name(ix)
    synthetic_corpus(corpus, 400)
    build = subprocess.Popen([*QA, "index", str(corpus), "--index", str(ix), "--model", "none", "--rebuild"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not [p for p in ix.glob("gen-*") if p.name != live] and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(random.uniform(0, 0.3))
    build.send_signal(signal.SIGKILL)
    build.wait()
    if generation_name(ix) == live:  # killed before publishing: the old index is untouched
        assert qa("ask", SCHOOL, "--index", str(ix), "--json").stdout == before
    (corpus / "town0000.txt").unlink()  # the next build has something to do, and also cleans
    done = qa("index", str(corpus), "--index", str(ix), "--model", "none")
    assert done.returncode == 0, done.stderr
    assert not leftovers(ix) and read_manifest(ix).articles == 401


UPLOAD = """
import sys
from pathlib import Path
from qa.retrieve import Retriever
from qa.sentences import load_splitter
from qa.uploads import LiveIndex
corpus, index, upload = map(Path, sys.argv[1:])
live = LiveIndex(Retriever.load(index), index, corpus, load_splitter())
print("uploading", flush=True)
print(live.add_files([("flood.jsonl", upload)]), flush=True)
"""


def test_killed_upload_is_in_the_corpus_and_the_index_or_in_neither(tmp_path, corpus_dir):
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    ix = tmp_path / "ix"
    assert qa("index", str(corpus), "--index", str(ix), "--model", "none").returncode == 0
    upload = tmp_path / "upload.jsonl"
    synthetic = synthetic_corpus(tmp_path / "synthetic", 300)
    upload.write_text("".join('{"id": "%s", "text": "%s"}\n' % (f.stem, f.read_text().split("\n\n")[1].strip())
                              for f in sorted(synthetic.glob("*.txt"))))
    outcomes = []
    for delay in (0.05, 0.4, 0.8, 1.2):  # into an upload that takes about a second
        child = subprocess.Popen([sys.executable, "-c", UPLOAD, str(corpus), str(ix), str(upload)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = child.stdout.readline()
        assert line == "uploading\n", child.communicate()[1][-3000:]
        time.sleep(delay * random.uniform(0.8, 1.2))
        child.send_signal(signal.SIGKILL)
        child.wait()
        # What a restart does: `qa serve` indexes the corpus, then drops staged uploads.
        assert qa("index", str(corpus), "--index", str(ix), "--model", "none").returncode == 0
        shutil.rmtree(corpus / ".staging", ignore_errors=True)
        in_corpus = {a.id for a in load_corpus(corpus).articles}
        in_index = set(Retriever.load(ix).article_ids)
        assert in_corpus == in_index
        outcomes.append("town0000" in in_index)
        if "town0000" in in_index:
            (corpus / "flood.jsonl").unlink()
            qa("index", str(corpus), "--index", str(ix), "--model", "none")
    print("upload landed in attempts:", outcomes)


def test_bad_files_are_named_and_the_rest_is_indexed(tmp_path, corpus_dir, monkeypatch):
    """The red team's three files: a 5,000-digit number, 200,000 nested [ and a 4 MB paragraph."""
    import nltk.redos
    monkeypatch.setattr(nltk.redos, "DEFAULT_TIMEOUT", 1.0)  # far less than splitting 4 MB at once takes
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    (corpus / "bigint.jsonl").write_text('{"text": "Numbers.", "n": ' + "9" * 5000 + "}\n")
    (corpus / "nested.jsonl").write_text("[" * 200_000 + "\n")
    sentence = "The committee met again on Tuesday and said little about the budget. "
    (corpus / "long.txt").write_text(sentence * (4_000_000 // len(sentence)))
    from qa.index import build_index
    from qa.sentences import load_splitter
    report = build_index(corpus, tmp_path / "ix", load_splitter(), None, progress=False)
    problems = {p.path: p.message for p in report.problems}
    assert "digits" in problems["bigint.jsonl:1"] and "nested too deeply" in problems["nested.jsonl:1"]
    assert report.manifest.articles == 3  # the two default articles and the long one
    r = Retriever.load(tmp_path / "ix")
    assert not answer(r, SCHOOL).abstained
    long = r.article("long")
    for hit in r.search("committee budget Tuesday", k=5):
        assert long.text[hit.passage.start:hit.passage.end] == hit.text
