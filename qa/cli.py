"""The `qa` command: index a corpus, ask a question, serve the chat."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from qa.embed import MODEL_ENV, NO_MODEL, Encoder, ModelUnavailable, load_encoder, resolve_model_name
from qa.index import BuildReport, IndexUnusable, build_index, read_manifest
from qa.selftrain import SELF_TRAINED, Training
from qa.sentences import load_splitter

log = logging.getLogger("qa")

DEFAULT_CORPUS = "corpus"
DEFAULT_INDEX = "index"
DEFAULT_SET = "eval/idlib.jsonl"


def open_encoder(model: str | None) -> tuple[Encoder | None, str]:
    """The encoder to index with, or None and the reason keyword-only mode is used."""
    name = resolve_model_name(model)
    if name == NO_MODEL:
        return None, "keyword-only: no model requested (--model none)"
    try:
        return load_encoder(name), ""
    except ModelUnavailable as e:
        return None, f"keyword-only: {e}"


def index_corpus(corpus: str, index: str, model: str | None = None, rebuild: bool = False,
                 progress: bool = True, retrain: bool = False) -> BuildReport:
    """Index corpus with the pretrained model asked for (--model, $QA_MODEL, the default); when it
    cannot be loaded, with one trained on the corpus itself (qa.selftrain; keyword-only below its
    minimum size). An index that has a self-trained model keeps it unless a model is named;
    --model self-trained asks for one, retrain trains it again."""
    named = model or os.environ.get(MODEL_ENV)
    self_train = None
    if retrain or named == SELF_TRAINED or (not named and not rebuild and _index_model(index) == SELF_TRAINED):
        encoder, reason, self_train = None, "", Training()
    else:
        encoder, reason = open_encoder(model)
        if encoder is None and resolve_model_name(model) != NO_MODEL:
            self_train = Training()
    if reason:
        log.warning(reason + ("; a model will be trained on this corpus if it is large enough" if self_train else ""))
    return build_index(corpus, index, load_splitter(), encoder, mode_reason=reason, rebuild=rebuild,
                       progress=progress, self_train=self_train, retrain=retrain)


def _index_model(index: str) -> str | None:
    try:
        return read_manifest(index).model
    except IndexUnusable:
        return None


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


def answer_json(ans) -> dict:
    return {"question": ans.question, "answer": ans.text, "abstained": ans.abstained,
            "citations": [{"n": c.n, "article_id": c.passage.article_id, "title": c.passage.title,
                           "source": c.passage.source, "published": c.passage.published,
                           "sentence": c.passage.text, "start": c.passage.start, "end": c.passage.end,
                           "score": round(c.score, 4)} for c in ans.citations]}


def format_answer(ans) -> str:
    lines = [ans.text, *ans.notes]
    for c in ans.citations:
        p = c.passage
        meta = ", ".join(x for x in (p.source, p.published) if x)
        lines.append(f"[{c.n}] {p.title or p.article_id}{f' ({meta})' if meta else ''}, sentence {p.index + 1}: {p.text}")
    if ans.abstained and ans.hits:
        lines.append("Nearest passages (not an answer):")
        lines += [f"  - {h.passage.article_id}: {h.text}" for h in ans.hits[:3]]
    return "\n".join(lines)


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
    p = sub.add_parser("ask", help="answer a question from the index, with citations")
    p.add_argument("question")
    p.add_argument("--index", default=DEFAULT_INDEX)
    p.add_argument("-k", type=int, default=5, help="passages to retrieve")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("eval", help="score answers, citations and abstention on a question set")
    p.add_argument("set", nargs="?", default=DEFAULT_SET, help=f"a .jsonl question set (default {DEFAULT_SET})")
    p.add_argument("--index", default=DEFAULT_INDEX)
    p.add_argument("--out", help="folder for report.md and report.json (default: the set's folder)")
    p.add_argument("-k", type=int, default=10, help="passages to retrieve per question")
    p.add_argument("--min-support", type=float, help="abstention threshold to try instead of the default")
    p = sub.add_parser("serve", help="index the corpus if needed and serve the chat")
    p.add_argument("--corpus", default=DEFAULT_CORPUS)
    p.add_argument("--index", default=DEFAULT_INDEX)
    p.add_argument("--model")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="opt in to a public Gradio share link")
    p.add_argument("--auth", help="USER:PASSWORD required to open the chat")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "sentence_transformers", "bm25s", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.command == "index":
            if args.retrain and args.model not in (None, SELF_TRAINED):
                parser.error(f"--retrain trains a model on this corpus; it cannot be used with --model {args.model}")
            print(describe(index_corpus(args.corpus, args.index, args.model, args.rebuild, retrain=args.retrain)))
        elif args.command == "ask":
            from qa.answer import answer
            from qa.reader import open_reader
            from qa.retrieve import Retriever
            r = Retriever.load(args.index)
            reader, why = open_reader()
            if why:
                log.warning(why)
            ans = answer(r, args.question, k=args.k, reader=reader)
            print(json.dumps(answer_json(ans), ensure_ascii=False, indent=2) if args.json else format_answer(ans))
        elif args.command == "eval":
            from qa import evaluate
            from qa.answer import Policy
            policy = Policy() if args.min_support is None else Policy(min_support=args.min_support)
            command = "qa " + " ".join(argv if argv is not None else sys.argv[1:])
            try:
                print(evaluate.run(args.set, args.index, args.out, args.k, policy, command))
            except evaluate.SetError as e:
                print(f"qa: {e}", file=sys.stderr)
                return 2
        else:
            from qa.chat import serve
            if Path(args.corpus).exists():
                print(describe(index_corpus(args.corpus, args.index, args.model)))
            serve(args.index, corpus=args.corpus, host=args.host, port=args.port, share=args.share,
                  auth=args.auth)
    except (IndexUnusable, FileNotFoundError) as e:
        print(f"qa: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
