"""Build and open the on-disk index: SQLite store, FAISS vectors, BM25 keyword indexes, manifest.

Layout: ``index/CURRENT`` names the live generation folder ``index/gen-NNNNNN``. A build
writes a whole new generation beside the live one and then replaces CURRENT in one atomic
rename, so a build that dies midway leaves the previous index usable. Unchanged articles
keep their vectors: only new and changed articles are embedded.

One writer at a time: a build holds an OS lock on ``index/LOCK`` from reading the corpus to
publishing, so the CLI and the chat's uploads never interleave. ``index/PREVIOUS`` names the
generation that was live before, kept because readers may still have it open; every other
generation (a killed build's) is deleted by the next build, under the lock.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import sqlite3
import time
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from hashlib import sha1
from pathlib import Path
from typing import Iterator

import bm25s
import faiss
import numpy as np

from qa import selftrain, store
from qa.articles import Article, LoadResult, Problem, load_corpus, text_key
from qa.embed import Encoder, ModelUnavailable
from qa.sentences import Splitter
from qa.tokens import VERSION as TOKENS_VERSION, tokenize

log = logging.getLogger(__name__)

FORMAT = "newsqa-index v1"
HNSW_THRESHOLD = 100_000  # sentences; below it exact search is fast enough (20 ms at 100k, 384 d)
BM25_PARAMS = {"k1": 0.3, "b": 0.9}  # tuned on half of SQuAD v1.1 dev: bench/reqa_squad.py, docs/benchmarks.md
KEYWORD_LEVELS = ("sentence", "window", "article")
LOCK_FILE = "LOCK"
# How long a second writer waits for the first: a self-trained build of 50k sentences takes minutes.
LOCK_TIMEOUT = 1800.0


class IndexUnusable(RuntimeError):
    """The index is missing, damaged or built with other settings; the message says how to fix it."""


class IndexBusy(IndexUnusable):
    """Another build of the same index did not finish within the wait allowed."""


@dataclass(frozen=True)
class Manifest:
    format: str
    model: str | None  # None: keyword-only
    dim: int | None
    mode: str  # "hybrid" or "keyword-only"
    mode_reason: str  # why keyword-only, and how to get the model
    splitter: str
    articles: int
    sentences: int
    corpus_fingerprint: str
    built_at: str
    faiss_index: str | None
    bm25: dict = field(default_factory=dict)
    model_path: str | None = None  # a self-trained model's folder inside the generation
    model_fingerprint: str | None = None  # sha256 of the model's weights: the same name may be other weights

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise IndexUnusable(f"{path.parent} has index format {data.get('format')!r}, this program reads "
                                f"{FORMAT!r}. Rebuild it: qa index CORPUS --index {path.parent.parent} --rebuild")
        return cls(**data)


@dataclass(frozen=True)
class BuildReport:
    manifest: Manifest
    added: int
    updated: int
    removed: int
    unchanged: int
    embedded: int  # sentences embedded in this build
    problems: tuple[Problem, ...]
    duplicates: tuple[tuple[str, str], ...]
    seconds: float
    trained: dict | None = None  # what qa.selftrain.train reported, when this build trained a model


def keyword_settings() -> dict:
    """What the keyword indexes are built with; an index built otherwise gets them rebuilt."""
    return {**BM25_PARAMS, "levels": list(KEYWORD_LEVELS), "tokens": TOKENS_VERSION}


def generation_name(index_dir: str | Path) -> str:
    """The live generation's folder name ('' when there is none): cheap enough to check per request."""
    return _read_name(Path(index_dir) / "CURRENT")


def _read_name(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""


def live_generation(index_dir: Path) -> Path | None:
    name = generation_name(index_dir)
    gen = Path(index_dir) / name
    return gen if name and (gen / "manifest.json").exists() else None


@contextmanager
def writer_lock(index_dir: str | Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Be the only writer of index_dir while inside; wait up to timeout seconds for another one.

    An flock on index_dir/LOCK: shared by processes and by threads (each call opens the file anew),
    and released by the kernel when its holder dies, so a killed build never blocks the next.
    Raises IndexBusy when the other writer holds on longer than timeout.
    """
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(index_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            log.warning("waiting for another build of %s to finish (up to %.0f s)…", index_dir, timeout)
            deadline = time.monotonic() + timeout
            while not _try_lock(fd):
                if time.monotonic() >= deadline:
                    raise IndexBusy(f"another build of {index_dir} was still running after {timeout:.0f} s; "
                                    "nothing was changed: try again when it has finished")
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # releases the lock


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def read_manifest(index_dir: str | Path) -> Manifest:
    gen = live_generation(Path(index_dir))
    if gen is None:
        raise IndexUnusable(f"no index in {index_dir}. Build one: qa index CORPUS --index {index_dir}")
    return Manifest.read(gen / "manifest.json")


def _origin(article: Article, root: Path) -> str:
    base = root if root.is_dir() else root.parent
    return str((base / article.origin).resolve()) if article.origin else ""


def _in_scope(origin: str, root: Path) -> bool:
    r = str(root.resolve())
    return origin == r or origin.startswith(r.rstrip(os.sep) + os.sep)


def check_compatible(manifest: Manifest, model: str | None, splitter: Splitter, index_dir: Path,
                     fingerprint: str = "") -> None:
    fix = "rebuild it with --rebuild, or index into another folder with --index DIR"
    if manifest.model == model and fingerprint and manifest.model_fingerprint not in (None, "", fingerprint):
        raise IndexUnusable(f"the index in {index_dir} was built with other weights under the name {model} "
                            f"(sha256 {manifest.model_fingerprint[:12]}…, now {fingerprint[:12]}…): {fix}")
    if manifest.splitter != splitter.name:
        raise IndexUnusable(f"the index in {index_dir} was split with {manifest.splitter!r}, "
                            f"now the splitter is {splitter.name!r}: {fix}")
    if manifest.model != model:
        raise IndexUnusable(f"the index in {index_dir} was built with model {manifest.model or 'none (keyword-only)'}, "
                            f"now it is {model or 'none (keyword-only)'}: {fix}, or pass --model {manifest.model or 'none'}")


def build_index(corpus: str | Path, index_dir: str | Path, splitter: Splitter, encoder: Encoder | None,
                mode_reason: str = "", rebuild: bool = False, progress: bool = True,
                loaded: LoadResult | None = None, self_train: selftrain.Training | None = None,
                retrain: bool = False, lock_timeout: float = LOCK_TIMEOUT,
                caller_holds_lock: bool = False) -> BuildReport:
    """Bring the index in index_dir up to date with corpus (a folder or a file).

    Articles from files under corpus that are new or changed are (re-)embedded, ones whose file
    is gone are removed; articles indexed from elsewhere are kept. An article whose text repeats
    one already indexed from another file is listed in duplicates and not indexed again.

    With no encoder and self_train given, the dense half comes from a model trained on the indexed
    sentences themselves (qa.selftrain) and kept inside the index: the index's own model is reused
    (retrain: a new one is trained), and an index with fewer than self_train.min_sentences
    sentences stays keyword-only, mode_reason saying so. An index's own model is copied into
    every new generation, whichever way the encoder came in.

    The whole build holds writer_lock(index_dir) (waiting up to lock_timeout seconds, then raising
    IndexBusy), unless caller_holds_lock says the caller took it already.
    """
    with nullcontext() if caller_holds_lock else writer_lock(index_dir, lock_timeout):
        _remove_orphans(Path(index_dir))
        return _build(corpus, index_dir, splitter, encoder, mode_reason, rebuild, progress, loaded,
                      self_train, retrain)


def _build(corpus: str | Path, index_dir: str | Path, splitter: Splitter, encoder: Encoder | None,
           mode_reason: str, rebuild: bool, progress: bool, loaded: LoadResult | None,
           self_train: selftrain.Training | None, retrain: bool) -> BuildReport:
    t0 = time.perf_counter()
    root, index_dir = Path(corpus), Path(index_dir)
    loaded = loaded or load_corpus(root)
    for p in loaded.problems:
        log.warning("%s: %s", p.path, p.message)
    model = encoder.info.name if encoder else None
    old_gen = None if rebuild else live_generation(index_dir)
    stored, old_vectors, old_manifest = {}, None, None
    if old_gen is not None:
        old_manifest = Manifest.read(old_gen / "manifest.json")
    reuse_model = train_model = False
    if encoder is None and self_train is not None:
        old_model = old_manifest.model if old_manifest else None
        if old_model == selftrain.SELF_TRAINED and not retrain:
            try:
                encoder = selftrain.load(old_gen / (old_manifest.model_path or selftrain.MODEL_DIR))
                model, reuse_model = encoder.info.name, True
            except ModelUnavailable as e:
                log.warning("training a new model: %s", e)
                train_model = True
        else:  # a pretrained model's index is only retrained when asked: check_compatible says how
            train_model = old_model in (None, selftrain.SELF_TRAINED) or retrain
    # The index's own model, handed in already loaded (an upload into a self-trained index): copied along.
    carry_model = (encoder is not None and self_train is None and old_manifest is not None
                   and old_manifest.model_path is not None and model == old_manifest.model)
    duplicates = list(loaded.duplicates)
    seen = {a.id for a in loaded.articles}
    fresh: list[Article] = []
    removed: list[str] = []
    if old_gen is not None:
        # A model trained in this build embeds every sentence anew, whatever embedded them before.
        check_compatible(old_manifest, old_manifest.model if train_model else model, splitter, index_dir,
                         "" if train_model or encoder is None else encoder.info.fingerprint)
        old_db = store.connect(old_gen / "store.sqlite", readonly=True)
        stored = store.article_hashes(old_db)
        removed = [i for i, (_, origin) in stored.items() if i not in seen and _in_scope(origin, root)]
        fresh = [a for a in loaded.articles if stored.get(a.id, ("",))[0] != a.content_hash]
        if fresh:
            fresh, repeats = _repeats_of_indexed(old_db, fresh, keep_out=set(removed))
            duplicates += [(a.id, kept) for a, kept in repeats]
            removed += [a.id for a, _ in repeats if a.id in stored]  # its earlier text is gone from its file
        old_db.close()
    else:
        fresh = list(loaded.articles)
    updated = sum(1 for a in fresh if a.id in stored)
    must_train = train_model and old_manifest is not None and (
        retrain or old_manifest.sentences >= self_train.min_sentences)
    if old_gen is not None and not fresh and not removed and old_manifest.bm25 == keyword_settings() \
            and not must_train:
        return BuildReport(old_manifest, 0, 0, 0, old_manifest.articles, 0, loaded.problems,
                           tuple(duplicates), time.perf_counter() - t0)
    index_dir.mkdir(parents=True, exist_ok=True)
    new_gen = index_dir / f"gen-{time.time_ns():020d}-{os.getpid()}"
    new_gen.mkdir()
    try:
        if old_gen is not None:
            shutil.copyfile(old_gen / "store.sqlite", new_gen / "store.sqlite")
            if encoder is not None:
                old_vectors = np.load(old_gen / "vectors.npy", mmap_mode="r")
        db = store.connect(new_gen / "store.sqlite")
        with db:
            store.delete_articles(db, removed + [a.id for a in fresh if a.id in stored])
            for a in fresh:
                store.insert_article(db, a, _origin(a, root), splitter.split(a.id, a.text))
            previous = store.renumber(db)
        texts = [t for (t,) in db.execute("SELECT text FROM sentences ORDER BY pos")]
        if not texts:
            raise IndexUnusable(f"nothing to index: no readable article in {root}"
                                + "".join(f"\n  {p.path}: {p.message}" for p in loaded.problems))
        trained, why = None, mode_reason.removeprefix("keyword-only: ")
        if train_model and len(texts) >= self_train.min_sentences:
            encoder, trained = _train_model(db, new_gen, self_train, progress)
            model = encoder.info.name
            mode_reason = selftrain.describe(trained) + (f"; a pretrained model would do better: {why}" if why else "")
        elif train_model:
            mode_reason = "; ".join(x for x in (
                f"keyword-only: {len(texts):,} sentences are too few to train a model on this corpus "
                f"(it takes {self_train.min_sentences:,})", why) if x)
        elif reuse_model or carry_model:
            shutil.copytree(old_gen / (old_manifest.model_path or selftrain.MODEL_DIR), new_gen / selftrain.MODEL_DIR)
            mode_reason = old_manifest.mode_reason
        if model == selftrain.SELF_TRAINED and not (new_gen / selftrain.MODEL_DIR).is_dir():
            raise IndexUnusable(f"the self-trained model's files are not in {old_gen or index_dir}, so this "
                                f"index would lose its model; train it again: qa index CORPUS --index "
                                f"{index_dir} --retrain")
        vectors = _vectors(encoder, texts, previous, old_vectors, progress) if encoder else None
        if vectors is not None:
            np.save(new_gen / "vectors.npy", vectors)
            faiss.write_index(_faiss_index(vectors), str(new_gen / "dense.faiss"))
        _write_keyword_indexes(db, texts, new_gen)
        n_articles = db.execute("SELECT COUNT(*) FROM articles").fetchone()[0]
        fingerprint = sha1("".join(f"{i}:{h}\n" for i, h in db.execute(
            "SELECT id, content_hash FROM articles ORDER BY id")).encode()).hexdigest()
        db.close()
        manifest = Manifest(
            format=FORMAT, model=model, dim=encoder.info.dim if encoder else None,
            mode="hybrid" if encoder else "keyword-only",
            mode_reason=mode_reason if encoder is None or model == selftrain.SELF_TRAINED else "",
            splitter=splitter.name, articles=n_articles, sentences=len(texts), corpus_fingerprint=fingerprint,
            built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            faiss_index=None if vectors is None else ("IndexHNSWFlat" if len(texts) >= HNSW_THRESHOLD else "IndexFlatIP"),
            bm25=keyword_settings(), model_path=selftrain.MODEL_DIR if model == selftrain.SELF_TRAINED else None,
            model_fingerprint=(encoder.info.fingerprint or None) if encoder else None)
        (new_gen / "manifest.json").write_text(json.dumps(manifest.__dict__, indent=2), encoding="utf-8")
        _sync_tree(new_gen)
        _publish(index_dir, new_gen)
    except BaseException:
        shutil.rmtree(new_gen, ignore_errors=True)
        raise
    embedded = (len(texts) if trained else sum(1 for p in previous if p is None)) if encoder else 0
    return BuildReport(manifest, added=len(fresh) - updated, updated=updated, removed=len(removed),
                       unchanged=n_articles - len(fresh), embedded=embedded, problems=loaded.problems,
                       duplicates=tuple(duplicates), seconds=time.perf_counter() - t0, trained=trained)


def _repeats_of_indexed(db: sqlite3.Connection, fresh: list[Article], keep_out: set[str]
                        ) -> tuple[list[Article], list[tuple[Article, str]]]:
    """(fresh articles to index, [(article, id of the indexed article it repeats)]): an article whose
    text repeats one already indexed (not among keep_out, not being replaced) is indexed only once."""
    replaced = keep_out | {a.id for a in fresh}
    indexed = {text_key(text): i for i, text in store.article_texts(db) if i not in replaced}
    keep, repeats = [], []
    for a in fresh:
        kept = indexed.get(text_key(a.text))
        if kept is None:
            keep.append(a)
        else:
            log.info("%s: skipped, same text as %r already in the index", a.id, kept)
            repeats.append((a, kept))
    return keep, repeats


def _train_model(db: sqlite3.Connection, gen: Path, settings: selftrain.Training,
                 progress: bool) -> tuple[Encoder, dict]:
    """Train a model on the indexed articles (in index order), save it in gen and load it from there."""
    docs: dict[str, tuple[str, list[str]]] = {}
    for aid, title, text in db.execute("SELECT s.article_id, a.title, s.text FROM sentences s "
                                       "JOIN articles a ON a.id = s.article_id ORDER BY s.pos"):
        docs.setdefault(aid, (title, []))[1].append(text)
    model, info = selftrain.train([selftrain.Document(t, tuple(s)) for t, s in docs.values()], settings, progress)
    selftrain.save(model, info, gen / selftrain.MODEL_DIR)
    return selftrain.load(gen / selftrain.MODEL_DIR), info


def _vectors(encoder: Encoder, texts: list[str], previous: list[int | None], old: np.ndarray | None,
             progress: bool) -> np.ndarray:
    """(n, d) float32: old rows carried over, only new sentences embedded."""
    out = np.zeros((len(texts), encoder.info.dim), dtype=np.float32)
    todo = [i for i, p in enumerate(previous) if p is None or old is None]
    kept = [i for i in range(len(texts)) if previous[i] is not None and old is not None]
    if kept:
        out[kept] = old[[previous[i] for i in kept]]
    if todo:
        log.info("embedding %d new sentences with %s", len(todo), encoder.info.name)
        out[todo] = encoder.encode_documents([texts[i] for i in todo], progress=progress)
    return out


def _faiss_index(vectors: np.ndarray) -> "faiss.Index":
    """Exact inner product for small corpora, HNSW above HNSW_THRESHOLD sentences."""
    n, d = vectors.shape
    if n >= HNSW_THRESHOLD:
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
    else:
        index = faiss.IndexFlatIP(d)
    index.add(vectors)
    return index


def _write_keyword_indexes(db: sqlite3.Connection, texts: list[str], gen: Path) -> None:
    """BM25 over three views of the text: each sentence, the sentence with its neighbours, its article."""
    sent_tokens = [tokenize(t) for t in texts]
    article_of = [a for (a,) in db.execute("SELECT article_id FROM sentences ORDER BY pos")]
    window = []
    for i, toks in enumerate(sent_tokens):
        same = [j for j in (i - 1, i + 1) if 0 <= j < len(texts) and article_of[j] == article_of[i]]
        window.append(toks + [t for j in same for t in sent_tokens[j]])
    articles, order = {}, []
    for title, aid in db.execute("SELECT a.title, a.id FROM articles a ORDER BY a.rowid"):
        articles[aid] = tokenize(title)
        order.append(aid)
    for aid, toks in zip(article_of, sent_tokens):
        articles[aid].extend(toks)
    article_pos = {a: i for i, a in enumerate(order)}
    np.save(gen / "sentence_article.npy", np.array([article_pos[a] for a in article_of], dtype=np.int64))
    for level, docs in zip(KEYWORD_LEVELS, (sent_tokens, window, [articles[a] for a in order])):
        bm = bm25s.BM25(**BM25_PARAMS)
        bm.index([d or [""] for d in docs], show_progress=False)
        bm.save(gen / f"bm25-{level}", show_progress=False)


def _publish(index_dir: Path, gen: Path) -> None:
    """Point CURRENT at gen atomically and PREVIOUS at the generation it replaces, then delete the rest.

    The replaced generation stays: a reader that opened it a moment ago may still be reading it.
    Call with the writer lock held.
    """
    live = generation_name(index_dir)
    if live and live != gen.name:
        _write_atomically(index_dir / "PREVIOUS", live)
    _write_atomically(index_dir / "CURRENT", gen.name)
    _remove_orphans(index_dir)


def _remove_orphans(index_dir: Path) -> None:
    """Delete every generation but CURRENT's and PREVIOUS's (killed builds leave them) and dead
    writers' temporary files. Call with the writer lock held: then no build is in progress."""
    keep = {generation_name(index_dir), _read_name(index_dir / "PREVIOUS")}
    for path in index_dir.glob("gen-*"):
        if path.name not in keep:
            log.info("removing %s: not the live or the previous generation", path)
            shutil.rmtree(path, ignore_errors=True)
    for tmp in index_dir.glob("*.tmp-*"):
        tmp.unlink(missing_ok=True)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")  # never another writer's
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _sync_tree(folder: Path) -> None:
    """Flush every file under folder to disk, so that CURRENT never names a generation that a power
    cut could leave half-written (the store is written with synchronous=OFF)."""
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        else:
            _fsync_dir(path)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
