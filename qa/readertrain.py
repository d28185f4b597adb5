"""Train the reader (qa.reader) from SQuAD dev's training titles, reproducibly: `qa train-reader`.

Titles held out anywhere (qa.squad.held_out_titles) are never read. Of the rest, in v1.1 file
order, every fourth (positions 3, 7, 11) is kept for calibrating the answer threshold, the others
are trained on. Per question: the sentence holding the answer is a positive; the other sentences of
its paragraph and the retriever's wrong top hits are hard negatives; for a SQuAD 2.0 unanswerable
question every candidate is a negative ("none answers").
"""
from __future__ import annotations

import logging
import pickle
import random
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qa import squad
from qa.articles import load_corpus
from qa.reader import Candidate, pair
from qa.sentences import Splitter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    seed: int = 13
    epochs: int = 1
    batch_size: int = 16
    # 5e-5 learnt only the share of positives in one epoch (training loss 0.40, AUC 0.57 on training
    # examples): the head is new and MiniLM's [CLS] was never trained to mean anything. On 64 examples,
    # 3e-4 fits in 40 steps where 5e-5 barely moves.
    learning_rate: float = 1.5e-4
    warmup: float = 0.05  # share of the steps with a rising learning rate
    paragraph_negatives: int = 2
    retrieved_negatives: int = 3
    retrieve_k: int = 8


@dataclass(frozen=True)
class Example:
    question: str
    candidate: Candidate
    label: float
    group: str  # question id: the examples of one question are judged together in calibration
    answerable: bool


def split_titles(v1: squad.Squad, held: frozenset[str]) -> tuple[list[str], list[str]]:
    """(train, calibration) titles among those not held out, in v1.1 file order."""
    usable = [t for t in v1.titles if t not in held]
    return [t for i, t in enumerate(usable) if i % 4 != 3], [t for i, t in enumerate(usable) if i % 4 == 3]


def _contains_answer(text: str, answers: tuple[str, ...]) -> bool:
    low = text.lower()
    return any(a.strip().lower() in low for a in answers if a.strip())


def examples(data: Path, titles: list[str], work: Path, splitter: Splitter, retriever_factory,
             settings: Settings) -> list[Example]:
    """Examples for the questions of titles (SQuAD v1.1 answerable, v2.0 unanswerable).

    retriever_factory(corpus_file, index_dir) -> a Retriever over those paragraphs: where the
    retriever's wrong top hits come from."""
    rng = random.Random(settings.seed)
    keep = set(titles)
    v1 = squad.read(data / squad.V1)
    work.mkdir(parents=True, exist_ok=True)
    corpus = squad.write_articles(v1, work / "paragraphs.jsonl", keep)
    retriever = retriever_factory(corpus, work / "index")
    sentences = {a.id: splitter.split(a.id, a.text) for a in load_corpus(corpus).articles}
    questions = [q for q in v1.questions if q.title in keep]
    v2_file = data / squad.V2
    if v2_file.exists():  # unanswerables, on v2's own copy of the same paragraphs
        v2 = squad.read(v2_file)
        by_context = {ctx: aid for aid, (_, ctx) in v1.paragraphs.items()}
        questions += [squad.Question(q.id, q.text, q.title, by_context[v2.paragraphs[q.article_id][1]], (), ())
                      for q in v2.questions if q.title in keep and not q.answerable
                      and v2.paragraphs[q.article_id][1] in by_context]
    out = []
    for q in questions:
        sents = sentences.get(q.article_id, [])
        around = lambda i: Candidate(sents[i].text, tuple(s.text for s in sents[max(0, i - 1):i]),  # noqa: E731
                                     tuple(s.text for s in sents[i + 1:i + 2]))
        gold = {i for i, s in enumerate(sents) for start in q.starts if s.start <= start < s.end}
        for i in gold:
            out.append(Example(q.text, around(i), 1.0, q.id, q.answerable))
        others = [i for i in range(len(sents)) if i not in gold and not (
            q.answerable and _contains_answer(sents[i].text, q.answers))]
        for i in rng.sample(others, min(settings.paragraph_negatives, len(others))):
            out.append(Example(q.text, around(i), 0.0, q.id, q.answerable))
        taken = 0
        for h in retriever.search(q.text, k=settings.retrieve_k):
            p = h.passage
            if taken == settings.retrieved_negatives:
                break
            if p.article_id == q.article_id and p.index in gold:
                continue
            if q.answerable and _contains_answer(p.text, q.answers):
                continue  # another sentence may state the answer too: neither positive nor negative
            out.append(Example(q.text, Candidate(p.text, h.before, h.after), 0.0, q.id, q.answerable))
            taken += 1
    return out


def train(train_set: list[Example], settings: Settings = Settings(), device: str | None = None,
          progress: bool = True):
    """Fine-tune a new_model() on train_set with binary cross-entropy; returns (model, report).

    The embeddings and the lowest layers stay frozen (they are not shipped: qa.reader). Fixed seeds: the same data
    and settings give the same weights on the same machine."""
    import torch
    from tqdm.auto import tqdm

    from qa.reader import frozen, new_model

    random.seed(settings.seed)
    np.random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    t0, cpu0 = time.perf_counter(), time.process_time()
    ce = new_model(device)
    model, tokenizer = ce.model, ce.tokenizer
    for name, p in model.named_parameters():
        p.requires_grad = not frozen(name)
    order = list(range(len(train_set)))
    steps = settings.epochs * ((len(order) + settings.batch_size - 1) // settings.batch_size)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate,
                            weight_decay=0.01)
    warm = max(1, int(settings.warmup * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / (steps - warm))))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    bar = tqdm(total=steps, desc="training the reader", unit="batch", disable=not progress)
    losses = []
    for epoch in range(settings.epochs):
        random.Random(settings.seed + epoch).shuffle(order)
        for b in range(0, len(order), settings.batch_size):
            batch = [train_set[i] for i in order[b:b + settings.batch_size]]
            pairs = [pair(e.question, e.candidate) for e in batch]
            enc = tokenizer([a for a, _ in pairs], [c for _, c in pairs], padding=True, truncation="only_second",
                            max_length=ce.max_length, return_tensors="pt").to(device)
            logits = model(**enc).logits.view(-1)
            loss = loss_fn(logits, torch.tensor([e.label for e in batch], dtype=torch.float32, device=device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            losses.append(float(loss))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    bar.close()
    model.eval()
    report = {"examples": len(train_set), "positives": int(sum(e.label for e in train_set)),
              "questions": len({e.group for e in train_set}), "epochs": settings.epochs, "steps": steps,
              "settings": settings.__dict__, "device": device,
              "seconds": round(time.perf_counter() - t0, 1), "cpu_seconds": round(time.process_time() - cpu0, 1),
              "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
              "final_loss": round(float(np.mean(losses[-100:])), 4) if losses else None}
    return ce, report


def retriever_over(encoder, splitter: Splitter):
    """A factory for examples(): index a corpus file with encoder (None: keyword-only) and open it."""
    from qa.index import build_index
    from qa.retrieve import Retriever

    def factory(corpus: Path, index_dir: Path):
        build_index(corpus, index_dir, splitter, encoder, mode_reason="keyword-only: reader training",
                    rebuild=True, progress=False)
        return Retriever.load(index_dir, encoder=encoder, load_model=encoder is not None)
    return factory


def run(data: Path, work: Path, settings: Settings = Settings(), progress: bool = True) -> dict:
    """Build the training examples, train, and save the weights into qa/weights (qa.reader.WEIGHTS).

    Returns the report that the reader card keeps (calibrate adds the threshold)."""
    from qa.embed import DEFAULT_MODEL, load_encoder
    from qa.reader import WEIGHTS, save_weights
    from qa.sentences import load_splitter

    held = squad.held_out_titles(data)
    train_titles, calibration_titles = split_titles(squad.read(data / squad.V1), held)
    splitter = load_splitter()
    t0 = time.perf_counter()
    cache = work / f"examples-{settings.seed}-{settings.paragraph_negatives}-{settings.retrieved_negatives}.pkl"
    if cache.exists():  # the same titles, settings and seed give the same examples
        train_set = pickle.loads(cache.read_bytes())
    else:
        train_set = examples(data, train_titles, work / "train", splitter,
                             retriever_over(load_encoder(DEFAULT_MODEL), splitter), settings)
        cache.write_bytes(pickle.dumps(train_set))
    log.info("%d training examples in %.0f s", len(train_set), time.perf_counter() - t0)
    model, report = train(train_set, settings, progress=progress)
    report["sha256"] = save_weights(model, WEIGHTS)
    report["train_titles"], report["calibration_titles"] = train_titles, calibration_titles
    report["examples_seconds"] = round(time.perf_counter() - t0 - report["seconds"], 1)
    import json

    from qa.reader import CARD
    CARD.write_text(json.dumps({"sha256": report["sha256"], "threshold": 0.5, "trained": report}, indent=1) + "\n",
                    encoding="utf-8")  # threshold uncalibrated until calibrate() runs
    return report


def squad_calibration(data: Path, work: Path, encoder, splitter: Splitter) -> tuple[object, list["CalibrationQuestion"]]:
    """The calibration titles' questions (v1.1 answerable, v2.0 unanswerable) over an index of every
    paragraph that is not held out."""
    held = squad.held_out_titles(data)
    v1 = squad.read(data / squad.V1)
    train_titles, calibration_titles = split_titles(v1, held)
    work.mkdir(parents=True, exist_ok=True)
    corpus = squad.write_articles(v1, work / "paragraphs.jsonl", set(train_titles) | set(calibration_titles))
    retriever = retriever_over(encoder, splitter)(corpus, work / "index")
    keep = set(calibration_titles)
    questions = [CalibrationQuestion(q.text, tuple((a,) for a in q.answers)) for q in v1.questions if q.title in keep]
    if (data / squad.V2).exists():
        questions += [CalibrationQuestion(q.text, ()) for q in squad.read(data / squad.V2).questions
                      if q.title in keep and not q.answerable]
    return retriever, questions


def set_calibration(set_path: Path, corpus: Path, work: Path, encoder, splitter: Splitter):
    """The calibration half of a question set (qa.evaluate) over its corpus."""
    from qa.evaluate import load_set

    items = [i for i in load_set(set_path) if i.split == "calibration"]
    retriever = retriever_over(encoder, splitter)(corpus, work / "index")
    return retriever, [CalibrationQuestion(i.question, i.answers if i.answerable else ()) for i in items]


def calibrate(data: Path, work: Path, sets: list[tuple[Path, Path]], progress: bool = True) -> dict:
    """Choose the reader's threshold on calibration data only (SQuAD calibration titles and the
    calibration halves of sets: (question set, its corpus)) and write the reader card."""
    import json

    from qa.embed import DEFAULT_MODEL, load_encoder
    from qa.reader import CARD, WEIGHTS, Reader, load_weights, new_model
    from qa.sentences import load_splitter

    card = json.loads(CARD.read_text(encoding="utf-8"))
    sha = card["sha256"]
    model = new_model()
    load_weights(model, WEIGHTS, sha)
    model.model.eval()
    reader = Reader(model, 0.5)
    encoder, splitter = load_encoder(DEFAULT_MODEL), load_splitter()
    judged = {}
    r, qs = squad_calibration(data, work / "calibration-squad", encoder, splitter)
    judged["squad"] = (qs, judge_all(r, reader, qs, progress, "SQuAD calibration titles"))
    for set_path, corpus in sets:
        r, qs = set_calibration(set_path, corpus, work / f"calibration-{set_path.stem}", encoder, splitter)
        judged[set_path.stem] = (qs, judge_all(r, reader, qs, progress, f"{set_path.name}, calibration half"))
    threshold, curve = choose_threshold(judged)
    card.update(sha256=sha, threshold=threshold, calibration={
        "sets": {name: len(qs) for name, (qs, _) in judged.items()},
        "objective": "most questions right (answered with an expected answer, or abstained on an "
                     "unanswerable one), each set counting equally",
        "curve": curve})
    CARD.write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    return card


@dataclass(frozen=True)
class CalibrationQuestion:
    text: str
    answers: tuple[tuple[str, ...], ...]  # alternatives, as in qa.evaluate; empty: unanswerable


def judge_all(retriever, reader, questions: list[CalibrationQuestion], progress: bool = False,
              desc: str = "") -> list[tuple[float, str]]:
    """(best reader score, answer text at threshold 0) per question: every threshold's outcome follows."""
    from tqdm.auto import tqdm

    from qa.answer import Policy, answer

    policy = Policy(threshold=0.0)
    out = []
    for q in tqdm(questions, desc=desc or "calibration questions", unit="q", disable=not progress):
        a = answer(retriever, q.text, k=5, policy=policy, reader=reader)
        out.append((a.best or 0.0, a.text))
    return out


def right_at(threshold: float, q: CalibrationQuestion, best: float, text: str) -> bool:
    """Answered with an expected answer, or abstained on an unanswerable question."""
    from qa.metrics import contains_answer

    if not q.answers:
        return best < threshold
    return best >= threshold and contains_answer(text, list(q.answers))


def choose_threshold(sets: dict[str, tuple[list[CalibrationQuestion], list[tuple[float, str]]]]) -> tuple[float, list[dict]]:
    """The threshold with the most questions right, each set counting equally (so that one large set
    does not decide for the others); returns it and the whole curve."""
    curve = []
    for t in np.round(np.arange(0.02, 0.99, 0.01), 2):
        row = {"threshold": float(t)}
        for name, (questions, judged) in sets.items():
            row[name] = float(np.mean([right_at(t, q, b, x) for q, (b, x) in zip(questions, judged)]))
        row["mean"] = float(np.mean([row[n] for n in sets]))
        curve.append(row)
    best = max(curve, key=lambda r: (r["mean"], -abs(r["threshold"] - 0.5)))
    return best["threshold"], curve
