"""Run a question set against a loaded index and score it: evidence, answers, citations, abstention, latency.

A set is a .jsonl file, one question per line (format: docs/evaluation.md). Questions are split
into a calibration half and a test half: by the `split` each question names (a set written over many
articles splits by article), else alternating in file order within answerable and unanswerable
questions, so that thresholds can be chosen on one half and judged on the other. `qa eval` asks
the set three ways in one run: keyword-only, hybrid, hybrid + reader (what the index allows).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from qa import metrics
from qa.answer import Answer, Policy, answer, supported
from qa.reader import Reader, open_reader
from qa.metrics import AbstentionScores, CitationCounts, Statement, Thresholds
from qa.retrieve import Hit, Retriever

SPLITS = ("calibration", "test")
# Questions tagged so share few or no words with their answer: a keyword-only index is not expected
# to answer them (an embedding model is). The report scores the rest in a column of its own.
PARAPHRASE = "paraphrase"
WITHOUT_PARAPHRASES = "without paraphrases"


class SetError(ValueError):
    """A question set that cannot be used; the message names the line and the fix."""


@dataclass(frozen=True)
class Gold:
    article_id: str
    sentence: str  # exact text of one sentence as the splitter cuts it


@dataclass(frozen=True)
class Item:
    id: str
    question: str
    answerable: bool
    answers: tuple[tuple[str, ...], ...]  # alternatives; every part of one must appear in the answer
    evidence: tuple[tuple[Gold, ...], ...]  # alternatives; every sentence of one is needed
    note: str
    tags: tuple[str, ...]  # free labels ("paraphrase", "off-topic"); the report breaks scores down by them
    split: str  # "calibration" or "test"


@dataclass(frozen=True)
class Outcome:
    item: Item
    answer: Answer
    evidence_ids: tuple[frozenset[str], ...]  # the evidence alternatives as sentence ids
    rank: int | None  # first rank where some alternative is complete; None: not in the hits
    correct: bool  # an expected answer is in a non-abstained answer
    statements: tuple[Statement, ...]
    citations: CitationCounts
    grounded: int  # statements found verbatim in one of their cited sentences
    gold_statements: int  # statements citing a gold evidence sentence
    seconds: float


@dataclass(frozen=True)
class Scores:
    questions: int
    answerable: int
    unanswerable: int
    recall_at_1: float  # evidence, answerable questions
    recall_at_3: float
    recall_at_5: float
    mrr: float  # @10
    answer_accuracy: float  # answerable questions
    overall_right: float  # answered with an expected answer, or abstained on an unanswerable question
    gold_cited: float  # answerable questions whose answer cites a gold evidence sentence
    gold_statement_share: float  # answer sentences of answerable questions that cite a gold sentence
    statements: int  # answer sentences in non-abstained answers
    citations: int
    citation_recall: float
    citation_precision: float
    groundedness: float
    abstention: AbstentionScores
    latency_p50_ms: float
    latency_p95_ms: float


def load_set(path: str | Path) -> list[Item]:
    """Read and check a question set; raises SetError naming the line and what to fix."""
    path = Path(path)
    if not path.is_file():
        raise SetError(f"question set {path} does not exist; pass a .jsonl file (format: docs/evaluation.md)")
    items, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise SetError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from e
        item = _item(record, where)
        if item.id in seen:
            raise SetError(f"{where}: id {item.id!r} is used twice; ids must be unique")
        if items and bool(item.split) != bool(items[0].split):
            raise SetError(f"{where}: give every question a 'split' or none (then the halves alternate)")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise SetError(f"{path} has no questions")
    if any(i.split for i in items):
        return items
    count = {True: 0, False: 0}
    out = []
    for item in items:
        out.append(replace(item, split=SPLITS[count[item.answerable] % 2]))
        count[item.answerable] += 1
    return out


def _item(r: object, where: str) -> Item:
    if not isinstance(r, dict):
        raise SetError(f"{where}: expected a JSON object")
    missing = [k for k in ("id", "question", "answerable") if k not in r]
    if missing:
        raise SetError(f"{where}: missing field(s) {', '.join(missing)}")
    if not isinstance(r["answerable"], bool):
        raise SetError(f"{where}: 'answerable' must be true or false")
    answers = tuple(_alternative(a, str, where, "answers") for a in r.get("answers", []))
    evidence = tuple(_alternative(e, dict, where, "evidence") for e in r.get("evidence", []))
    try:
        evidence = tuple(tuple(Gold(g["article_id"], g["sentence"]) for g in alt) for alt in evidence)
    except KeyError as e:
        raise SetError(f"{where}: every evidence sentence needs 'article_id' and 'sentence' (missing {e})") from e
    if r["answerable"] and not (answers and evidence):
        raise SetError(f"{where}: an answerable question needs 'answers' and 'evidence'")
    if not r["answerable"] and (answers or evidence):
        raise SetError(f"{where}: an unanswerable question must have no 'answers' or 'evidence'")
    tags = r.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise SetError(f"{where}: 'tags' must be a list of strings")
    split = r.get("split", "")
    if split not in ("", *SPLITS):
        raise SetError(f"{where}: 'split' must be one of {', '.join(SPLITS)} (or absent)")
    return Item(str(r["id"]), str(r["question"]), r["answerable"], answers, evidence, str(r.get("note", "")),
                tuple(tags), split)


def _alternative(value, kind: type, where: str, field: str) -> tuple:
    parts = value if isinstance(value, list) else [value]
    if not parts or not all(isinstance(p, kind) for p in parts):
        raise SetError(f"{where}: each entry of {field!r} must be a {kind.__name__} or a list of them")
    return tuple(parts)


def resolve_evidence(items: list[Item], retriever: Retriever) -> dict[Gold, str]:
    """Sentence id of every gold sentence; raises SetError listing those the index lacks."""
    ids, problems = {}, []
    for item in items:
        for gold in {g for alt in item.evidence for g in alt}:
            found = retriever.find_sentence(gold.article_id, gold.sentence)
            if found:
                ids[gold] = found
            elif retriever.article(gold.article_id) is None:
                problems.append(f"{item.id}: article {gold.article_id!r} is not in the index; index the "
                                f"corpus this set was written for (qa index CORPUS --index DIR)")
            else:
                problems.append(f"{item.id}: no sentence of {gold.article_id} reads exactly {gold.sentence!r}; "
                                f"copy sentences as the splitter cuts them (docs/evaluation.md)")
    if problems:
        raise SetError("gold evidence not found in the index:\n  " + "\n  ".join(sorted(problems)))
    return ids


def evaluate(items: list[Item], retriever: Retriever, policy: Policy = Policy(), k: int = 10,
             progress: bool = True, reader: Reader | None = None, desc: str = "questions") -> list[Outcome]:
    """Ask every question (answers use the top hits as usual; k hits are kept for evidence ranking)."""
    from tqdm import tqdm

    ids = resolve_evidence(items, retriever)
    out = []
    for item in tqdm(items, desc=desc, unit="q", disable=not progress):
        t0 = time.perf_counter()
        ans = answer(retriever, item.question, k=k, policy=policy, reader=reader)
        seconds = time.perf_counter() - t0
        evidence_ids = tuple(frozenset(ids[g] for g in alt) for alt in item.evidence)
        retrieved = [{p.sentence_id for p in h.sources} for h in ans.hits]
        statements = () if ans.abstained else tuple(metrics.parse_statements(ans.text))
        cited = {c.n: c.passage.text for c in ans.citations}
        cited_ids = {c.n: c.passage.sentence_id for c in ans.citations}
        gold_ids = set().union(*evidence_ids) if evidence_ids else set()
        gold = {alt[0].sentence for alt in item.evidence if len(alt) == 1}
        out.append(Outcome(
            item=item, answer=ans, evidence_ids=evidence_ids,
            rank=metrics.first_complete_rank(retrieved, list(evidence_ids)),
            correct=item.answerable and not ans.abstained and metrics.contains_answer(ans.text, list(item.answers)),
            statements=statements, citations=metrics.citation_counts(list(statements), cited, gold),
            grounded=metrics.grounded_statements(list(statements), cited),
            gold_statements=sum(1 for st in statements if any(cited_ids.get(n) in gold_ids for n in st.citations)),
            seconds=seconds))
    return out


def score(outcomes: list[Outcome]) -> Scores:
    answerable = [o for o in outcomes if o.item.answerable]
    ranks = [o.rank for o in answerable]
    answered = [o for o in outcomes if not o.answer.abstained]
    citations = sum((o.citations for o in answered), CitationCounts(0, 0, 0, 0))
    ms = [1000 * o.seconds for o in outcomes]
    return Scores(
        questions=len(outcomes), answerable=len(answerable), unanswerable=len(outcomes) - len(answerable),
        recall_at_1=metrics.recall_at(ranks, 1), recall_at_3=metrics.recall_at(ranks, 3),
        recall_at_5=metrics.recall_at(ranks, 5), mrr=metrics.mrr(ranks, 10),
        answer_accuracy=metrics.ratio(sum(o.correct for o in answerable), len(answerable)),
        overall_right=metrics.ratio(sum(o.correct if o.item.answerable else o.answer.abstained for o in outcomes),
                                    len(outcomes)),
        gold_cited=metrics.ratio(sum(o.gold_statements > 0 for o in answerable), len(answerable)),
        gold_statement_share=metrics.ratio(sum(o.gold_statements for o in answerable),
                                           sum(len(o.statements) for o in answerable)),
        statements=citations.statements, citations=citations.citations,
        citation_recall=citations.recall, citation_precision=citations.precision,
        groundedness=metrics.ratio(sum(o.grounded for o in answered), sum(len(o.statements) for o in answered)),
        abstention=metrics.abstention_scores([o.item.answerable for o in outcomes],
                                             [o.answer.abstained for o in outcomes]),
        latency_p50_ms=metrics.percentile(ms, 50), latency_p95_ms=metrics.percentile(ms, 95))


def failures(outcome: Outcome) -> list[str]:
    """Why a question counts as failed; empty when it passed every check."""
    o, why = outcome, []
    if o.item.answerable:
        if o.rank is None or o.rank > 5:
            why.append("evidence not in the top 5" if o.rank is None else f"evidence first complete at rank {o.rank}")
        if o.answer.abstained:
            why.append("abstained on an answerable question")
        elif not o.correct:
            why.append("no expected answer in the answer")
    elif not o.answer.abstained:
        why.append("answered an unanswerable question")
    if o.citations.supported_statements < o.citations.statements:
        why.append("an answer sentence is not supported by its citations")
    if o.citations.relevant_citations < o.citations.citations:
        why.append("a citation does not support its sentence")
    if o.grounded < len(o.statements):
        why.append("an answer sentence is not verbatim in a cited source")
    return why


def abstains(best: Hit | None, policy: Policy) -> bool:
    """The answer's own rule (qa.answer.answer): abstain unless the best hit is supported."""
    return best is None or not supported(best, policy)


def calibrate(answerable: list[bool], best: list[Hit | None]) -> Thresholds:
    """Abstention thresholds for these questions (use a calibration split): metrics.best_thresholds
    on the scores of each question's top hit (None when nothing was retrieved)."""
    return metrics.best_thresholds(answerable, [None if h is None else h.support for h in best],
                                   [None if h is None else h.dense for h in best])


def best_hit(o: Outcome) -> Hit | None:
    return o.answer.hits[0] if o.answer.hits else None


def report_json(outcomes: list[Outcome], meta: dict) -> dict:
    """Scores per split and every failed question with what was retrieved for it."""
    return _finite({
        **meta,
        "scores": {name: asdict(score(part)) for name, part in split_outcomes(outcomes).items()},
        "failures": [{
            "id": o.item.id, "split": o.item.split, "question": o.item.question, "note": o.item.note,
            "reasons": failures(o), "expected": [list(a) for a in o.item.answers],
            "gold": [sorted(ids) for ids in o.evidence_ids], "evidence_rank": o.rank,
            "answer": o.answer.text, "abstained": o.answer.abstained,
            "retrieved": [{"rank": i, "sentence_id": h.passage.sentence_id, "text": h.text,
                           "score": round(h.score, 4), "support": round(h.support, 4),
                           "dense": None if h.dense is None else round(h.dense, 4),
                           "sources": [p.sentence_id for p in h.sources]}
                          for i, h in enumerate(o.answer.hits, start=1)],
        } for o in outcomes if failures(o)],
    })


def split_outcomes(outcomes: list[Outcome]) -> dict[str, list[Outcome]]:
    """all, each split, and (when some are tagged paraphrase) all questions but those."""
    parts = {"all": outcomes, **{s: [o for o in outcomes if o.item.split == s] for s in SPLITS}}
    if any(PARAPHRASE in o.item.tags for o in outcomes):
        parts[WITHOUT_PARAPHRASES] = [o for o in outcomes if PARAPHRASE not in o.item.tags]
    return parts


def _finite(value):
    """JSON has no NaN: undefined metrics become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


ROWS = (  # (label, how to read it from Scores, format)
    ("questions (answerable / unanswerable)", lambda s: f"{s.questions} ({s.answerable} / {s.unanswerable})"),
    ("evidence Recall@1", lambda s: _pct(s.recall_at_1)),
    ("evidence Recall@3", lambda s: _pct(s.recall_at_3)),
    ("evidence Recall@5", lambda s: _pct(s.recall_at_5)),
    ("evidence MRR@10", lambda s: _num(s.mrr)),
    ("answer accuracy", lambda s: _pct(s.answer_accuracy)),
    ("overall right (answered right or rightly abstained)", lambda s: _pct(s.overall_right)),
    ("gold sentence cited (answerable)", lambda s: _pct(s.gold_cited)),
    ("answer sentences that are gold evidence", lambda s: _pct(s.gold_statement_share)),
    ("answer sentences / citations judged", lambda s: f"{s.statements} / {s.citations}"),
    ("citation recall (ALCE)", lambda s: _pct(s.citation_recall)),
    ("citation precision (ALCE)", lambda s: _pct(s.citation_precision)),
    ("groundedness", lambda s: _pct(s.groundedness)),
    ("abstention precision", lambda s: _pct(s.abstention.precision)),
    ("abstention recall", lambda s: _pct(s.abstention.recall)),
    ("abstention F1", lambda s: _num(s.abstention.f1)),
    ("false-abstention rate", lambda s: _pct(s.abstention.false_abstention_rate)),
    ("latency p50 / p95 (ms)", lambda s: f"{s.latency_p50_ms:.1f} / {s.latency_p95_ms:.1f}"),
)


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}%"


def _num(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f}"


def scores_table(outcomes: list[Outcome]) -> str:
    """Markdown table: one row per metric, one column per split."""
    parts = {name: score(part) for name, part in split_outcomes(outcomes).items() if part}
    lines = ["| metric | " + " | ".join(parts) + " |", "|---" * (len(parts) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(get(s) for s in parts.values()) + " |" for label, get in ROWS]
    return "\n".join(lines)


def tags_table(outcomes: list[Outcome]) -> str:
    """Markdown table of the main scores per tag: where the failures are."""
    tags = sorted({t for o in outcomes for t in o.item.tags})
    lines = ["| tag | questions | evidence Recall@5 | answer accuracy | abstained |", "|---|---|---|---|---|"]
    for tag in tags:
        part = [o for o in outcomes if tag in o.item.tags]
        s = score(part)
        abstained = metrics.ratio(sum(o.answer.abstained for o in part), len(part))
        lines.append(f"| {tag} | {len(part)} | {_pct(s.recall_at_5)} | {_pct(s.answer_accuracy)} | {_pct(abstained)} |")
    return "\n".join(lines)


COMPARED = ("evidence Recall@5", "evidence MRR@10", "answer accuracy",
            "overall right (answered right or rightly abstained)", "gold sentence cited (answerable)",
            "abstention F1", "citation precision (ALCE)", "groundedness", "latency p50 / p95 (ms)")


@dataclass(frozen=True)
class Config:
    """One way of answering compared by `qa eval`."""
    name: str
    retriever: Retriever
    reader: Reader | None


def configs(index_dir: str | Path, reader: Reader | None) -> list[Config]:
    """keyword-only (rules), hybrid (rules) when the index has a model that loads, and with the reader
    when it loads: the last one is what the product answers with."""
    full = Retriever.load(index_dir)
    out = [Config("keyword-only", Retriever.load(index_dir, load_model=False), None)]
    if full.encoder is not None:
        out.append(Config("hybrid", full, None))
    if reader is not None:
        out.append(Config(("hybrid" if full.encoder is not None else "keyword-only") + " + reader", full, reader))
    return out


def comparison_table(results: list[tuple[Config, list[Outcome]]], split: str) -> str:
    """Markdown: the main metrics of each configuration side by side, on one split ("all" for every question)."""
    scores = [score([o for o in outcomes if split == "all" or o.item.split == split]) for _, outcomes in results]
    rows = dict(ROWS)
    lines = ["| metric | " + " | ".join(c.name for c, _ in results) + " |", "|---" * (len(results) + 1) + "|",
             "| questions (answerable / unanswerable) | " + " | ".join(
                 rows["questions (answerable / unanswerable)"](s) for s in scores) + " |"]
    lines += [f"| {label} | " + " | ".join(rows[label](s) for s in scores) + " |" for label in COMPARED]
    return "\n".join(lines)


def report_markdown(outcomes: list[Outcome], meta: dict, calibration: Thresholds | None,
                    held_out: AbstentionScores | None, policy: Policy, compared: str = "") -> str:
    failed = [o for o in outcomes if failures(o)]
    lines = [f"# Evaluation report: {meta['set']}", "",
             f"Index `{meta['index']}`, mode {meta['mode']}, answers by {meta['answers']}, {meta['questions']} "
             f"questions, k {meta['k']}.", f"Command: `{meta['command']}`", ""]
    if compared:
        lines += ["## Side by side (test split; the calibration split and `all` are in the JSON)", "", compared, ""]
    lines += [f"## {meta['answers']}: every split", "", scores_table(outcomes), "", "By tag (all questions):", "",
              tags_table(outcomes), "", "## Abstention threshold", ""]
    if calibration is None:
        lines.append(f"The reader's threshold {meta['threshold']} (qa/weights/reader.json) was chosen by "
                     "`qa train-reader` on calibration data only (SQuAD calibration titles and the calibration "
                     "halves of the bundled sets); recalibrate for your corpus: docs/reader.md.")
    else:
        lines.append(
            f"Rules: chosen on the calibration split (best balanced accuracy, "
            f"{_num(calibration.balanced_accuracy)}; abstention F1 {_num(calibration.f1)}): "
            f"min_support {calibration.min_support}"
            + (f", min_dense {calibration.min_dense}" if math.isfinite(calibration.min_dense) else "")
            + f". On the test split that gives abstention F1 {_num(held_out.f1)}, false-abstention rate "
            f"{_pct(held_out.false_abstention_rate)}. To use it: `Policy(min_support={calibration.min_support}"
            + (f", min_dense={calibration.min_dense}" if math.isfinite(calibration.min_dense) else "") + ")`"
            " (docs/evaluation.md).")
    lines += ["", f"## Failed questions ({len(failed)} of {len(outcomes)}; details in the JSON report)", ""]
    for o in failed:
        lines.append(f"- **{o.item.id}** ({o.item.split}) {o.item.question} — {'; '.join(failures(o))}. "
                     f"_{o.item.note}_")
    return "\n".join(lines) + "\n"


def write_reports(outcomes: list[Outcome], retriever: Retriever, out_dir: str | Path, meta: dict,
                  policy: Policy, reader: Reader | None = None, compared: str = "",
                  side_by_side: dict | None = None) -> tuple[Path, Path, str]:
    """Write report.md and report.json into out_dir; returns their paths and the summary to print.

    Rules: the abstention thresholds are chosen on the calibration split and judged by asking the
    test split's questions again with them. Reader: its threshold comes calibrated (qa train-reader)."""
    calibration = held_out = None
    if reader is None:
        calibration = calibrate([o.item.answerable for o in outcomes if o.item.split == "calibration"],
                                [best_hit(o) for o in outcomes if o.item.split == "calibration"])
        tuned = replace(policy, min_support=calibration.min_support, min_dense=calibration.min_dense)
        test = [o.item for o in outcomes if o.item.split == "test"]
        held_out = score(evaluate(test, retriever, tuned, k=meta["k"], progress=False)).abstention
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "report.md", out_dir / "report.json"
    text = report_markdown(outcomes, meta, calibration, held_out, policy, compared)
    md.write_text(text, encoding="utf-8")
    data = report_json(outcomes, {**meta, "policy": asdict(policy), "side_by_side": side_by_side or {},
                                  "calibration": asdict(calibration) if calibration else None})
    js.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return md, js, text


def run(set_path: str | Path, index_dir: str | Path, out_dir: str | Path | None = None, k: int = 10,
        policy: Policy = Policy(), command: str = "", progress: bool = True, reader: Reader | None = None) -> str:
    """Entry point of `qa eval`: load the set and the index, ask everything each way (configs), write
    the reports of the last way (the product's) with the others beside it. Returns the text to print."""
    items = load_set(set_path)
    if reader is None:  # compared whether or not it answers by default
        reader, why = open_reader("on")
        if why:
            print(why)
    results = [(c, evaluate(items, c.retriever, policy, k=k, progress=progress, reader=c.reader, desc=c.name))
               for c in configs(index_dir, reader)]
    main, outcomes = results[-1]
    meta = {"set": str(set_path), "index": str(index_dir), "mode": str(main.retriever.mode),
            "answers": main.name if main.reader else f"{main.name} rules",
            "threshold": main.reader.threshold if main.reader else None, "questions": len(items),
            "k": k, "command": command or f"qa eval {set_path} --index {index_dir}"}
    compared = comparison_table(results, "test")
    side = {split: {c.name: asdict(score([o for o in outs if split == "all" or o.item.split == split]))
                    for c, outs in results} for split in ("all", *SPLITS)}
    md, js, _ = write_reports(outcomes, main.retriever, out_dir or Path(set_path).parent, meta, policy, main.reader,
                              compared, side)
    failed = sum(1 for o in outcomes if failures(o))
    return (f"{len(items)} questions from {set_path}, index {main.retriever.mode}\n\n"
            f"Test split, side by side:\n\n{compared}\n\nAll questions:\n\n{comparison_table(results, 'all')}\n\n"
            f"{meta['answers']}, every split:\n\n{scores_table(outcomes)}\n\n"
            f"{failed} questions failed a check with {meta['answers']}; report: {md}, every failure with what "
            f"was retrieved: {js}")
