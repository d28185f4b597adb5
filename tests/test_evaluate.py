"""The grounding evaluation: the default question set, its thresholds, calibration, reports, `qa eval`."""
from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest

from qa.answer import Policy
from qa.evaluate import (WITHOUT_PARAPHRASES, Item, SetError, calibrate, evaluate, failures, load_set,
                         resolve_evidence, score, split_outcomes, write_reports)
from qa.metrics import contains_answer
from qa.retrieve import Hit, Passage, Retriever

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SET = ROOT / "eval" / "idlib.jsonl"
SQUAD = ROOT.parent / "shared" / "data" / "squad"

# Committed floors for the default set in keyword-only mode. All questions: below the issue's
# targets because paraphrases need an embedding model (docs/evaluation.md, "Against the targets").
# Without the paraphrase-tagged questions: the issue's targets themselves.
THRESHOLDS = {
    "recall_at_5": 0.93,  # measured 0.948 (55 of 58)
    "answer_accuracy": 0.77,  # measured 0.793 (46 of 58)
    "groundedness": 1.0,
    "citation_precision": 0.90,  # measured 0.991
    "citation_recall": 0.90,  # measured 1.0
}
ABSTENTION_F1 = 0.75  # measured 0.776
TARGETS_WITHOUT_PARAPHRASES = {
    "recall_at_5": 1.0,
    "answer_accuracy": 0.90,  # measured 0.917 (44 of 48)
    "groundedness": 1.0,
    "citation_precision": 0.90,
}
TARGET_ABSTENTION_F1 = 0.90  # measured 0.927


@pytest.fixture(scope="module")
def items() -> list[Item]:
    return load_set(DEFAULT_SET)


@pytest.fixture(scope="module")
def keyword_outcomes(keyword_index, items):
    return evaluate(items, Retriever.load(keyword_index), progress=False)


def test_default_set_covers_what_the_issue_asks(items):
    assert len(items) >= 60
    assert sum(not i.answerable for i in items) >= 15
    assert len({i.id for i in items}) == len(items)
    tags = {t for i in items for t in i.tags}
    assert {"fact", "paraphrase", "two-sentence", "one-article", "both-articles", "on-topic", "off-topic"} <= tags
    assert all(i.note for i in items)
    for split in ("calibration", "test"):
        part = [i for i in items if i.split == split]
        assert abs(len(part) - len(items) / 2) <= 1
        assert sum(not i.answerable for i in part) >= 7


def test_every_expected_answer_is_in_its_gold_evidence(items):
    for item in (i for i in items if i.answerable):
        texts = [" ".join(g.sentence for g in alt) for alt in item.evidence]
        assert any(contains_answer(t, list(item.answers)) for t in texts), item.id


def test_gold_sentences_are_exactly_as_the_splitter_cuts_them(keyword_index, items):
    ids = resolve_evidence(items, Retriever.load(keyword_index))
    assert len(ids) == len({g for i in items for alt in i.evidence for g in alt})
    assert all(":" in sid for sid in ids.values())


def test_default_set_meets_committed_thresholds(keyword_outcomes):
    s = score(keyword_outcomes)
    for name, floor in THRESHOLDS.items():
        assert getattr(s, name) >= floor, f"{name} {getattr(s, name):.3f} fell below {floor}"
    assert s.abstention.f1 >= ABSTENTION_F1
    assert s.latency_p95_ms < 1000


def test_default_set_meets_the_issue_targets_without_paraphrases(keyword_outcomes):
    s = score(split_outcomes(keyword_outcomes)[WITHOUT_PARAPHRASES])
    assert s.answerable == 48 and s.unanswerable == 20
    for name, target in TARGETS_WITHOUT_PARAPHRASES.items():
        assert getattr(s, name) >= target, f"{name} {getattr(s, name):.3f} fell below {target}"
    assert s.abstention.f1 >= TARGET_ABSTENTION_F1


def test_off_topic_questions_are_refused_and_facts_answered(keyword_outcomes):
    by_id = {o.item.id: o for o in keyword_outcomes}
    assert all(o.answer.abstained for o in keyword_outcomes if "off-topic" in o.item.tags)
    ariha = by_id["a15"]  # 11 civilians near the hospital: both articles, one fact
    assert ariha.correct and ariha.rank == 1 and not failures(ariha)
    assert {c.passage.article_id for c in ariha.answer.citations} == {"000_24bd21a41d8b3e79", "002_3d1258f428892b47"}


def test_reports_list_every_failure_with_what_was_retrieved(keyword_index, keyword_outcomes, tmp_path):
    meta = {"set": "eval/idlib.jsonl", "index": "index", "mode": "keyword-only", "answers": "keyword-only rules", "questions": 78,
            "k": 10, "command": "qa eval"}
    md, js, text = write_reports(keyword_outcomes, Retriever.load(keyword_index), tmp_path, meta, Policy())
    data = json.loads(js.read_text(encoding="utf-8"))  # strict JSON: no NaN
    failed = [o for o in keyword_outcomes if failures(o)]
    assert [f["id"] for f in data["failures"]] == [o.item.id for o in failed]
    some = next(f for f in data["failures"] if f["retrieved"])
    assert {"rank", "sentence_id", "text", "score", "support", "sources"} <= set(some["retrieved"][0])
    assert set(data["scores"]) == {"all", "calibration", "test", "without paraphrases"}
    assert "| evidence Recall@5 |" in md.read_text(encoding="utf-8") and "Failed questions" in text


def test_evaluate_runs_in_hybrid_mode(hybrid_index, items):
    outcomes = evaluate(items[:5] + items[-3:], Retriever.load(hybrid_index), progress=False)
    assert all(h.dense is not None for o in outcomes for h in o.answer.hits)
    assert not math.isnan(score(outcomes).mrr)


def _hit(support: float, dense: float | None = None) -> Hit:
    p = Passage("a:0", "a", "", "", "", "", 0, 0, 0, 1, "x")
    return Hit(p, 1.0, support, dense, (), (), (p,))


def test_calibrate_puts_the_cut_in_the_middle_of_the_gap():
    answerable = [True, True, True, False, False, False]
    best = [_hit(0.9), _hit(0.8), _hit(0.7), _hit(0.3), _hit(0.2), None]
    c = calibrate(answerable, best)
    assert c.min_support == 0.5 and c.balanced_accuracy == 1.0 and c.f1 == 1.0
    assert math.isinf(c.min_dense)


def test_calibrate_trades_errors_evenly_and_uses_dense_when_it_helps():
    # an answerable question with low keyword support is recovered by its dense score
    answerable = [True, True, False, False]
    best = [_hit(0.9, 0.2), _hit(0.1, 0.9), _hit(0.2, 0.3), _hit(0.15, 0.1)]
    c = calibrate(answerable, best)
    assert c.balanced_accuracy == 1.0
    assert 0.2 < c.min_support <= 0.9 and 0.3 < c.min_dense <= 0.9


@pytest.mark.parametrize("line, message", [
    ("{not json", "invalid JSON"),
    ('{"id": "x", "question": "q"}', "missing field(s) answerable"),
    ('{"id": "x", "question": "q", "answerable": true, "answers": ["a"]}', "needs 'answers' and 'evidence'"),
    ('{"id": "x", "question": "q", "answerable": false, "answers": ["a"]}', "must have no"),
    ('{"id": "x", "question": "q", "answerable": true, "answers": ["a"], "evidence": [{"sentence": "s"}]}',
     "article_id"),
    ('{"id": "x", "question": "q", "answerable": "yes"}', "true or false"),
])
def test_load_set_names_the_line_and_the_fix(tmp_path, line, message):
    path = tmp_path / "set.jsonl"
    path.write_text('{"id": "ok", "question": "q", "answerable": false}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(SetError, match=re.escape(message)) as e:
        load_set(path)
    assert f"{path}:2" in str(e.value)


def test_load_set_rejects_duplicate_ids_and_missing_files(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_text('{"id": "a", "question": "q", "answerable": false}\n' * 2, encoding="utf-8")
    with pytest.raises(SetError, match="used twice"):
        load_set(path)
    with pytest.raises(SetError, match="does not exist"):
        load_set(tmp_path / "missing.jsonl")


def test_a_set_may_name_each_question_s_split(tmp_path):
    path = tmp_path / "set.jsonl"
    rows = [{"id": "a", "question": "q", "answerable": False, "split": "test"},
            {"id": "b", "question": "q", "answerable": False, "split": "test"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert [i.split for i in load_set(path)] == ["test", "test"]  # named, not alternated
    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps({**rows[1], "split": ""}) + "\n", encoding="utf-8")
    with pytest.raises(SetError, match="every question a 'split' or none"):
        load_set(path)
    path.write_text(json.dumps({**rows[0], "split": "train"}) + "\n", encoding="utf-8")
    with pytest.raises(SetError, match="'split' must be one of calibration, test"):
        load_set(path)


def test_bbc_set_is_held_out_by_article_with_near_misses():
    """eval/bbc_news.jsonl: 150+ questions, 30%+ unanswerable (most near-misses), halves by article."""
    items = load_set(ROOT / "eval" / "bbc_news.jsonl")
    unanswerable = [i for i in items if not i.answerable]
    assert len(items) >= 150 and len(unanswerable) >= 0.3 * len(items)
    assert sum("near-miss" in i.tags for i in unanswerable) > len(unanswerable) / 2
    split_of = {}
    for i in items:
        for alt in i.evidence:
            for g in alt:
                split_of.setdefault(g.article_id, set()).add(i.split)
    assert all(len(s) == 1 for s in split_of.values())  # no article feeds both halves
    for half in ("calibration", "test"):
        part = [i for i in items if i.split == half]
        assert len(part) >= 70 and sum(not i.answerable for i in part) >= 0.3 * len(part)
    used = {json.loads(line)["article_id"] for name in ("bbc_paraphrase.jsonl", "bbc_paraphrase_limits.jsonl")
            for line in (ROOT / "eval" / name).read_text(encoding="utf-8").splitlines() if line.strip()}
    assert not used & set(split_of)  # no article an earlier set used
    for i in items:
        if i.answerable:
            assert any(contains_answer(" ".join(g.sentence for g in alt), list(i.answers)) for alt in i.evidence), i.id


def test_evidence_missing_from_the_index_is_reported(keyword_index, tmp_path):
    path = tmp_path / "set.jsonl"
    rows = [{"id": "typo", "question": "q", "answerable": True, "answers": ["a"],
             "evidence": [{"article_id": "000_24bd21a41d8b3e79", "sentence": "Amnesty said so."}]},
            {"id": "gone", "question": "q", "answerable": True, "answers": ["a"],
             "evidence": [{"article_id": "no-such-article", "sentence": "x"}]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(SetError) as e:
        resolve_evidence(load_set(path), Retriever.load(keyword_index))
    assert "typo: no sentence of 000_24bd21a41d8b3e79" in str(e.value)
    assert "gone: article 'no-such-article' is not in the index" in str(e.value)


def test_cli_eval_prints_the_table_and_writes_reports(keyword_index, tmp_path, capsys):
    from qa.cli import main

    assert main(["eval", str(DEFAULT_SET), "--index", str(keyword_index), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| answer accuracy |" in out and "keyword-only" in out
    assert (tmp_path / "report.md").exists() and (tmp_path / "report.json").exists()


def test_cli_eval_bad_set_is_a_message_not_a_traceback(keyword_index, tmp_path, capsys):
    from qa.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n", encoding="utf-8")
    assert main(["eval", str(bad), "--index", str(keyword_index), "--out", str(tmp_path)]) == 2
    assert "bad.jsonl:1: invalid JSON" in capsys.readouterr().err


@pytest.mark.slow
def test_reqa_squad_keyword_fusion_beats_plain_bm25(tmp_path, monkeypatch):
    """The held-out half of SQuAD v1.1 (every third question, to stay fast), product vs plain bm25s."""
    if not (SQUAD / "dev-v1.1.json.gz").exists():
        pytest.skip(f"SQuAD v1.1 dev not found in {SQUAD} (see ../shared/data/SOURCES.md)")
    spec = importlib.util.spec_from_file_location("reqa_squad", ROOT / "bench" / "reqa_squad.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "reqa_squad", bench)  # dataclasses look their module up
    spec.loader.exec_module(bench)
    corpus = bench.build_corpus(SQUAD / "dev-v1.1.json.gz", tmp_path / "v1")
    test = [q for q in corpus.questions if q.half == "test"][::3]
    r = Retriever.load(corpus.index, load_model=False)
    texts = [t for *_, t in r.sentences()]
    plain, _ = bench.plain_bm25_ranks(texts, test)
    ours, _ = bench.product_ranks(r, test)
    assert bench.mrr(ours, 10) >= bench.mrr(plain, 10) + 0.03
    assert bench.recall_at(ours, 5) >= bench.recall_at(plain, 5) + 0.03
