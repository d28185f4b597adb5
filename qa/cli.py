"""The `qa` command: index a corpus, ask a question, serve the chat."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from qa import models, store
from qa.answer import Policy
from qa.articles import filter_day
from qa.corroborate import also_answering, corroborate
from qa.distributed import RayUnavailable
from qa.embed import NO_MODEL
from qa.index import BuildReport, IndexUnusable, build_index, read_manifest
from qa.render import reported, scope_words
from qa.selftrain import SELF_TRAINED
from qa.sentences import load_splitter

log = logging.getLogger("qa")

DEFAULT_CORPUS = "corpus"
DEFAULT_INDEX = "index"
DEFAULT_SET = "eval/idlib.jsonl"


def index_corpus(corpus: str, index: str, model: str | None = None, rebuild: bool = False,
                 progress: bool = True, retrain: bool = False, ingest=None) -> BuildReport:
    """Index corpus with the model qa.models.for_build picks (--model, $QA_MODEL, the index's own,
    the default); retrain trains the index's own model again. An index that is keyword-only only
    because no model could be loaded is rebuilt with the model once one loads. ingest: a
    qa.index.Ingest (qa.distributed.RayIngest), or None to read and embed in this process."""
    indexed = None
    try:
        m = read_manifest(index)
        indexed = m.model or (NO_MODEL if "no model requested" in m.mode_reason else None)
        fallback = m.model is None and indexed is None
    except IndexUnusable:
        fallback = False
    chosen = models.for_build(model, indexed, rebuild, retrain)
    if fallback and chosen.encoder is not None and not rebuild:
        log.info("the index in %s is keyword-only because no model could be loaded before; "
                 "rebuilding it with %s", index, chosen.encoder.info.name)
        rebuild = True
    return build_index(corpus, index, load_splitter(), chosen.encoder, mode_reason=chosen.reason, rebuild=rebuild,
                       progress=progress, self_train=chosen.self_train, retrain=retrain, ingest=ingest)


def train_reader(data: Path, work: Path, sets: list[str], calibrate_only: bool = False) -> dict:
    """qa train-reader: train (unless calibrate_only), then calibrate; returns the reader card."""
    import gzip
    import shutil

    from qa import readertrain

    squad_dir = data / "squad"
    if not (squad_dir / "dev-v1.1.json.gz").exists():
        raise FileNotFoundError(f"{squad_dir}/dev-v1.1.json.gz not found: pass --data with squad/ inside "
                                f"(../shared/data/SOURCES.md)")
    work.mkdir(parents=True, exist_ok=True)
    pairs = [tuple(Path(x) for x in s.split("=", 1)) for s in sets]
    if not sets:
        pairs = [(Path(DEFAULT_SET), Path(DEFAULT_CORPUS))]
        bbc = data / "news" / "bbc-news.csv.gz"
        if bbc.exists() and Path("eval/bbc_news.jsonl").exists():
            (work / "bbc").mkdir(exist_ok=True)
            with gzip.open(bbc, "rb") as src, open(work / "bbc" / "bbc-news.csv", "wb") as dst:
                shutil.copyfileobj(src, dst)
            pairs.append((Path("eval/bbc_news.jsonl"), work / "bbc" / "bbc-news.csv"))
    if not calibrate_only:
        readertrain.run(squad_dir, work)
    return readertrain.calibrate(squad_dir, work, pairs)


def describe(report: BuildReport) -> str:
    m = report.manifest
    lines = [f"index: {m.articles} articles, {m.sentences} sentences ({report.added} added, "
             f"{report.updated} updated, {report.removed} removed, {report.unchanged} unchanged; "
             f"{report.embedded} sentences embedded) in {report.seconds:.1f} s",
             f"mode: {m.mode}" + (f" ({m.model}, {m.dim} d, FAISS {m.faiss_index})" if m.model else "")]
    if m.mode_reason:
        lines.append(f"  {m.mode_reason}")
    if report.trained:
        t = report.trained
        lines.append(f"  trained in this run: {t['pairs']:,} sentence pairs, {t['epochs']} epochs, "
                     f"{t['seconds']:.0f} s on {t['device']}; saved in the index as {m.model_path}/")
    for dup, kept in report.duplicates:
        lines.append(f"duplicate: {dup} repeats {kept}; indexed once")
    for p in report.problems:
        lines.append(f"problem: {p.path}: {p.message}")
    return "\n".join(lines)


class FilterError(ValueError):
    """A filter of `qa ask` that is no date, or an outlet the index does not name."""


def _day(value: str, flag: str) -> str:
    """A --since/--until value as search takes it (qa.articles.filter_day)."""
    day = filter_day(value)
    if day is None:
        raise FilterError(f"{flag} {value!r} is not a date; use YYYY-MM-DD, e.g. 2020-05-11")
    return day


def answer_json(ans, policy: Policy = Policy()) -> dict:
    return {"question": ans.question, "answer": ans.text, "abstained": ans.abstained,
            "citations": [{"n": c.n, "article_id": c.passage.article_id, "title": c.passage.title,
                           "source": c.passage.source, "published": c.passage.published,
                           "sentence": c.passage.text, "start": c.passage.start, "end": c.passage.end,
                           "score": round(c.score, 4)} for c in ans.citations],
            "agreements": [{"sentence": g.text, "citations": [c.n for c in g.citations],
                            "reported_by": g.reported_by, "articles_answering": g.matching_articles,
                            "differences": [[{"words": " ".join(r.words), "citations": list(r.citations)}
                                             for r in d.readings] for d in g.differences]}
                           for g in corroborate(ans, policy)],
            "also_answering": [{"article_id": p.article_id, "title": p.title, "source": p.source,
                                "published": p.published, "sentence": p.text, "start": p.start, "end": p.end}
                               for p in also_answering(ans, policy)]}


def format_answer(ans, policy: Policy = Policy()) -> str:
    lines = [ans.text, *ans.notes]
    for i, g in enumerate(corroborate(ans, policy), start=1):  # who reports each sentence, and where they differ
        if g.reported_by == 1 and not g.differences:
            continue  # one source: its citation says all (--json has every sentence)
        lines.append(f"({i}) {reported(g)}.")
        lines += ["    The articles differ here: " + " / ".join(
            f"“{' '.join(r.words)}” " + "".join(f"[{n}]" for n in r.citations) for r in d.readings)
            for d in g.differences]
    for c in ans.citations:
        p = c.passage
        meta = ", ".join(x for x in (p.source, p.published) if x)
        lines.append(f"[{c.n}] {p.title or p.article_id}{f' ({meta})' if meta else ''}, sentence {p.index + 1}: {p.text}")
    also = also_answering(ans, policy)
    if also:
        lines.append("Also counted as answering, not quoted:")
        lines += [f"  - {p.title or p.article_id}: {p.text}" for p in also]
    if ans.abstained and ans.hits:
        lines.append("Nearest passages (not an answer):")
        lines += [f"  - {h.passage.article_id}: {h.text}" for h in ans.hits[:3]]
    return "\n".join(lines)


# What a build (qa index, or the one qa serve starts with) that stops on an error or Ctrl-C leaves:
# the generation published last (qa.index).
KEPT = "; the index stays as it was last published"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qa", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("index", help="index a folder or file of articles (incremental)")
    p.add_argument("corpus", nargs="?", default=DEFAULT_CORPUS)
    p.add_argument("--index", default=DEFAULT_INDEX)
    p.add_argument("--model", help=f"sentence-transformers name or path, '{SELF_TRAINED}' (train one on "
                                   f"this corpus) or '{NO_MODEL}' (env QA_MODEL)")
    p.add_argument("--rebuild", action="store_true", help="start a new index instead of updating")
    p.add_argument("--retrain", action="store_true",
                   help="train the index's own model again on everything indexed (implies --model self-trained)")
    p.add_argument("--ray", metavar="local|auto|ADDRESS",
                   help="read, split and embed on a Ray cluster: 'local' starts one here, 'auto' joins this "
                        "machine's (`ray start`), or the head's address (needs the extra: pip install -e '.[ray]')")
    p.add_argument("--workers", type=int, help="with --ray: actors that split and embed (default: one per CPU, "
                                                "or per GPU when the cluster has GPUs)")
    p = sub.add_parser("ask", help="answer a question from the index, with citations")
    p.add_argument("question")
    p.add_argument("--index", default=DEFAULT_INDEX)
    p.add_argument("-k", type=int, default=5, help="passages to retrieve")
    p.add_argument("--json", action="store_true")
    p.add_argument("--source", action="append", default=[], metavar="OUTLET",
                   help="search only this outlet's articles (repeat for several)")
    p.add_argument("--since", default="", metavar="DATE",
                   help="only articles dated on or after DATE (YYYY-MM-DD, YYYY-MM or YYYY)")
    p.add_argument("--until", default="", metavar="DATE",
                   help="only articles dated on or before DATE (YYYY-MM-DD, YYYY-MM or YYYY)")
    p = sub.add_parser("eval", help="score answers, citations and abstention on a question set")
    p.add_argument("set", nargs="?", default=DEFAULT_SET, help=f"a .jsonl question set (default {DEFAULT_SET})")
    p.add_argument("--index", default=DEFAULT_INDEX)
    p.add_argument("--out", help="folder for report.md and report.json (default: the set's folder)")
    p.add_argument("-k", type=int, default=10, help="passages to retrieve per question")
    p.add_argument("--min-support", type=float, help="abstention threshold to try instead of the default")
    p = sub.add_parser("train-reader", help="train the reader on SQuAD dev's training titles and calibrate "
                                            "its threshold (about an hour on 2 CPU cores)")
    p.add_argument("--data", default="../shared/data", help="folder with squad/ and news/ (../shared/data)")
    p.add_argument("--work", default="/tmp/qa-reader", help="folder for the training and calibration indexes")
    p.add_argument("--calibrate-only", action="store_true", help="keep the weights, choose the threshold again")
    p.add_argument("--set", action="append", default=[], metavar="SET=CORPUS",
                   help="also calibrate on the calibration half of a question set over its corpus "
                        "(default: eval/idlib.jsonl=corpus and eval/bbc_news.jsonl=BBC News from --data)")
    p = sub.add_parser("serve", help="index the corpus if needed and serve the chat")
    p.add_argument("--corpus", default=DEFAULT_CORPUS)
    p.add_argument("--index", default=DEFAULT_INDEX)
    p.add_argument("--model")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="opt in to a public Gradio share link")
    p.add_argument("--auth", help="USER:PASSWORD required to open the chat")
    p.add_argument("--ray", metavar="local|auto|ADDRESS",
                   help="search the index from Ray actors: a local cluster, this machine's, or the head's address "
                        "(needs the extra: pip install -e '.[ray]'; the index folder must be on storage every node sees)")
    p.add_argument("--actors", type=int, help="with --ray: actors holding the segments (default: one per node of the cluster)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "sentence_transformers", "bm25s", "faiss", "ray"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.command == "index":
            if args.retrain and args.model not in (None, SELF_TRAINED):
                parser.error(f"--retrain trains a model on this corpus; it cannot be used with --model {args.model}")
            if args.workers is not None and (args.ray is None or args.workers < 1):
                parser.error("--workers needs --ray and a number of at least 1")
            ingest = None
            if args.ray:
                from qa import distributed
                distributed.connect(args.ray)
                ingest = distributed.RayIngest(workers=args.workers)
            try:
                print(describe(index_corpus(args.corpus, args.index, args.model, args.rebuild, retrain=args.retrain,
                                            ingest=ingest)))
            finally:
                if ingest is not None:
                    distributed.disconnect()
        elif args.command == "ask":
            from qa.answer import Assistant
            since, until = _day(args.since, "--since"), _day(args.until, "--until")
            assistant = Assistant.load(args.index)
            if assistant.notice:
                log.warning(assistant.notice)
            outlets = assistant.retriever.stats().sources if args.source else ()  # a pass over every article
            unknown = [s for s in args.source if s not in outlets]
            if unknown:
                raise FilterError(f"no outlet named {', '.join(map(repr, unknown))} in the index; its outlets: "
                                    + (", ".join(sorted(outlets)[:30]) + (" …" if len(outlets) > 30 else "")
                                       if outlets else "none (no article names one)"))
            ans = assistant.ask(args.question, k=args.k, sources=args.source or None, since=since or None,
                                until=until or None)
            scope = scope_words(args.source, since, until)
            print(json.dumps(answer_json(ans, assistant.policy), ensure_ascii=False, indent=2) if args.json
                  else (f"Searched {scope}.\n" if scope else "") + format_answer(ans, assistant.policy))
        elif args.command == "train-reader":
            print(json.dumps(train_reader(Path(args.data), Path(args.work), args.set, args.calibrate_only), indent=1))
        elif args.command == "eval":
            from qa import evaluate
            policy = Policy() if args.min_support is None else Policy(min_support=args.min_support)
            command = "qa " + " ".join(argv if argv is not None else sys.argv[1:])
            try:
                print(evaluate.run(args.set, args.index, args.out, args.k, policy, command))
            except evaluate.SetError as e:
                print(f"qa: {e}", file=sys.stderr)
                return 2
        else:
            from qa.chat import serve
            if args.actors is not None and (args.ray is None or args.actors < 1):
                parser.error("--actors needs --ray and a number of at least 1")
            if args.ray:  # a missing extra or an unreachable cluster is said before any work
                from qa import distributed
                distributed.connect(args.ray)
            if Path(args.corpus).exists():
                print(describe(index_corpus(args.corpus, args.index, args.model)))
            serve(args.index, corpus=args.corpus, host=args.host, port=args.port, share=args.share,
                  auth=args.auth, ray=args.ray, actors=args.actors)
    except (IndexUnusable, FileNotFoundError, RayUnavailable, FilterError) as e:
        print(f"qa: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qa: interrupted" + (KEPT if args.command in ("index", "serve") else ""), file=sys.stderr)
        return 130
    except (OSError, store.DatabaseError) as e:  # a full disk, a folder that cannot be written, a damaged store
        log.debug("failed", exc_info=True)
        print(f"qa: {e}" + (KEPT if args.command in ("index", "serve") else ""), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
