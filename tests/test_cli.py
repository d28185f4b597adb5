"""The qa command end to end: index a corpus, ask with --json, report bad files and mismatches."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qa.cli import main

CITATION_KEYS = {"n", "article_id", "title", "source", "published", "sentence", "start", "end", "score"}


def run_qa(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "QA_MODEL": "none", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "qa.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_index_then_ask_json(tmp_path, corpus_dir):
    shutil.copytree(corpus_dir, tmp_path / "corpus")
    (tmp_path / "corpus" / "broken.txt").write_bytes(b"\x00\x01\x02binary")
    done = run_qa("index", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 articles, 26 sentences" in done.stdout and "keyword-only" in done.stdout
    assert "broken.txt" in done.stdout

    done = run_qa("ask", "How many civilians were killed near the hospital in Ariha?", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert set(out) == {"question", "answer", "abstained", "citations", "agreements", "also_answering"}
    assert out["also_answering"] == []  # both articles that answer are cited
    assert out["abstained"] is False and "11 civilians" in out["answer"]
    assert len(out["citations"]) == 2 and all(set(c) == CITATION_KEYS for c in out["citations"])
    assert [c["n"] for c in out["citations"]] == [1, 2]
    # the two outlets report one fact and name the town differently: said, not hidden
    assert out["agreements"] == [{"sentence": out["answer"].removesuffix(" [1][2]"), "citations": [1, 2],
                                  "reported_by": 2, "articles_answering": 2,
                                  "differences": [[{"words": "Ariha", "citations": [1]},
                                                   {"words": "Jericho", "citations": [2]}]]}]
    text = (tmp_path / "corpus" / f"{out['citations'][0]['article_id']}.txt").read_text(encoding="utf-8")
    assert out["citations"][0]["sentence"] in text

    done = run_qa("ask", "What is the capital of France?", "--json", cwd=tmp_path)
    assert json.loads(done.stdout) == {"question": "What is the capital of France?",
                                       "answer": "The articles don't say.", "abstained": True, "citations": [],
                                       "agreements": [], "also_answering": []}


def test_in_process_index_and_ask(tmp_path, corpus_dir, capsys, monkeypatch):
    monkeypatch.setenv("QA_MODEL", "none")
    assert main(["index", str(corpus_dir), "--index", str(tmp_path / "ix")]) == 0
    assert "2 added" in capsys.readouterr().out
    assert main(["index", str(corpus_dir), "--index", str(tmp_path / "ix")]) == 0
    out = capsys.readouterr().out
    assert "0 added" in out and "2 unchanged" in out
    assert main(["ask", "Who is the regional director of Amnesty?", "--index", str(tmp_path / "ix")]) == 0
    out = capsys.readouterr().out
    assert "Heba Morayef" in out and "[1]" in out
    assert main(["ask", "How many civilians were killed near the hospital in Ariha?",
                 "--index", str(tmp_path / "ix")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:3] == ["(1) Reported by 2 of 2 articles that answer the question.",
                        "    The articles differ here: “Ariha” [1] / “Jericho” [2]"]


def test_errors_are_messages_not_tracebacks(tmp_path, capsys, monkeypatch, tiny_model, corpus_dir):
    monkeypatch.setenv("QA_MODEL", "none")
    assert main(["ask", "anything", "--index", str(tmp_path / "none")]) == 2
    assert "qa index" in capsys.readouterr().err
    assert main(["index", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["index", str(corpus_dir), "--index", str(tmp_path / "ix")]) == 0
    assert main(["index", str(corpus_dir), "--index", str(tmp_path / "ix"), "--model", str(tiny_model)]) == 2
    assert "--rebuild" in capsys.readouterr().err


def test_ask_searches_only_the_outlets_and_dates_asked_for(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("QA_MODEL", "none")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("title: Dam opens\nsource: River Post\ndate: 2021-03-04\n\nThe new dam on "
                                  "the Vale river opened on Thursday after six years of work. It holds water for "
                                  "two cities.\n")
    (corpus / "b.txt").write_text("title: Vale dam\nsource: Valley Times\ndate: 2023-07-08\n\nThe Vale river dam "
                                  "opened on Thursday after six years of building work. Officials praised the "
                                  "engineers.\n")
    ix = str(tmp_path / "ix")
    assert main(["index", str(corpus), "--index", ix]) == 0
    capsys.readouterr()

    def ask(*flags):
        code = main(["ask", "When did the Vale river dam open?", "--index", ix, "--json", *flags])
        got = capsys.readouterr()
        return code, json.loads(got.out) if code == 0 else got.err

    def outlets(out):
        return {c["source"] for c in out["citations"]}

    assert ask()[1]["abstained"] is False and outlets(ask()[1]) == {"River Post", "Valley Times"}
    assert outlets(ask("--source", "Valley Times")[1]) == {"Valley Times"}
    assert outlets(ask("--since", "2022")[1]) == {"Valley Times"}
    assert outlets(ask("--until", "2022-12")[1]) == {"River Post"}
    assert ask("--since", "2024-01-01")[1]["abstained"] is True
    code, err = ask("--source", "Daily Nothing")
    assert code == 2 and "no outlet named 'Daily Nothing'" in err and "River Post, Valley Times" in err
    code, err = ask("--until", "soon")
    assert code == 2 and "--until 'soon' is not a date" in err
    assert main(["ask", "When did the Vale river dam open?", "--index", ix, "--source", "River Post"]) == 0
    assert capsys.readouterr().out.startswith("Searched only River Post.\n")


def test_an_index_path_that_cannot_be_used_is_a_message_not_a_traceback(tmp_path, corpus_dir, capsys):
    (tmp_path / "afile").write_text("not a folder")
    assert main(["ask", "Who documented the attacks?", "--index", str(tmp_path / "afile")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("qa: ") and "Not a directory" in err and "Traceback" not in err
    (tmp_path / "ix" / "LOCK").mkdir(parents=True)
    assert main(["index", str(corpus_dir), "--index", str(tmp_path / "ix"), "--model", "none"]) == 1
    err = capsys.readouterr().err
    assert "Is a directory" in err and "stays as it was last published" in err
