"""Adding articles to a served archive: safe file names, validation, staged indexing, following the live index.

An upload is staged in the corpus folder's hidden `.staging/` (the loader skips it), indexed together with
the corpus, and moved into the corpus folder only once the index that holds it is published, all under the
index's writer lock: a killed upload leaves only staged files, which the next upload or start removes.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from qa import selftrain
from qa.articles import MAX_FILE_BYTES, SUPPORTED_SUFFIXES, load_corpus, text_key
from qa.index import (IndexBusy, IndexUnusable, Manifest, build_index, generation_name, live_generation,
                      writer_lock)
from qa.reader import Reader
from qa.retrieve import Retriever
from qa.sentences import Splitter

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 80
STAGING = ".staging"  # inside the corpus folder: hidden, on the same file system, so moving out is a rename
UPLOAD_WAIT = 120.0  # seconds an upload waits for another build of the index before giving up
CHECK_EVERY = 1.0  # seconds between looks at the index's CURRENT for a generation published elsewhere
RETIRE_AFTER = 60.0  # seconds a replaced generation's Ray actors keep answering the questions sent to them


@dataclass(frozen=True)
class Added:
    """What became of one uploaded file."""
    name: str  # as uploaded, for messages
    saved_as: str  # file name in the corpus folder; '' when rejected
    articles: tuple[str, ...]  # ids of the articles now answerable
    messages: tuple[str, ...]  # why it was rejected, or warnings about parts of it

    @property
    def accepted(self) -> bool:
        return bool(self.saved_as)


def safe_filename(name: str) -> str:
    """A file name that can only land directly inside the corpus folder.

    Keeps the last path component (either slash), ASCII letters, digits, '.', '-' and '_'; no
    leading dot (hidden files are not loaded). Raises ValueError for an unsupported suffix.
    """
    base = re.split(r"[\\/]", name)[-1]
    suffix = Path(base).suffix.lower()  # before the name is folded to ASCII: "日本.txt" is a .txt file
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(f"{suffix or 'no suffix'} is not an article format; upload "
                         f"{', '.join(SUPPORTED_SUFFIXES)} files")
    stem = unicodedata.normalize("NFKD", base[: -len(suffix)]).encode("ascii", "ignore").decode("ascii")
    return (_UNSAFE.sub("-", stem).strip(".-_")[:MAX_NAME] or "upload") + suffix


class LiveIndex:
    """The index being served. Readers use .retriever, which follows the live generation (published by
    an upload here or by `qa index`); add_files stages, indexes and publishes uploads as one step."""

    def __init__(self, retriever: Retriever, index_dir: str | Path, corpus_dir: str | Path | None,
                 splitter: Splitter | None, check_every: float = CHECK_EVERY, upload_wait: float = UPLOAD_WAIT,
                 reader: Reader | None = None):
        self.reader = reader  # judges answers (qa.reader); None: the rules' fallback
        self.index_dir = Path(index_dir)
        self.corpus_dir = Path(corpus_dir) if corpus_dir else None
        self.splitter = splitter
        self.check_every, self.upload_wait = check_every, upload_wait
        self._retriever, self._generation = retriever, generation_name(self.index_dir)
        self._model_info = _model_info(live_generation(self.index_dir))
        self._checked = time.monotonic()
        self._reloading = threading.Lock()
        self._uploading = threading.Lock()

    @property
    def retriever(self) -> Retriever:
        """The served index; a newer generation is loaded here, by the first request that notices it
        (the others keep the one they have meanwhile)."""
        if time.monotonic() - self._checked >= self.check_every:
            self._checked = time.monotonic()
            if generation_name(self.index_dir) not in ("", self._generation) and self._reloading.acquire(blocking=False):
                try:
                    self._reload()
                finally:
                    self._reloading.release()
        return self._retriever

    def _reload(self) -> None:
        name = generation_name(self.index_dir)
        gen = live_generation(self.index_dir)
        if gen is None:
            return
        old = self._retriever
        try:
            info = _model_info(gen)
            same_model = old.encoder is not None and info == self._model_info
            r = Retriever.load(self.index_dir, encoder=old.encoder if same_model else None, ray=old.ray,
                               actors=old.actors)
        except (IndexUnusable, OSError, ValueError) as e:  # e.g. deleted under us by two quick builds
            log.warning("still serving %s: generation %s could not be loaded (%s)", self._generation, name, e)
            return
        self._retriever, self._generation, self._model_info = r, name, info
        if old.ray:  # the old generation's actors, once the questions already sent to them are answered
            threading.Timer(RETIRE_AFTER, old.close).start()
        log.info("now serving %s (%d articles)", name, r.stats().articles)

    def can_add(self) -> str:
        """'' when uploads can be indexed, else why not."""
        if self.corpus_dir is None or self.splitter is None:
            return "Adding articles is off: the chat was started without a corpus folder."
        if self.corpus_dir.exists() and not self.corpus_dir.is_dir():
            return "Adding articles is off: the corpus is a single file; serve a folder with --corpus DIR."
        if self.retriever.manifest.model and self.retriever.encoder is None:
            return ("Adding articles is off: the index's model cannot be loaded now, so new sentences "
                    "cannot be embedded.")
        return ""

    def remove_staged(self) -> None:
        """Delete uploads a killed server left staged: they never reached the index (start-up calls this)."""
        if self.corpus_dir is not None and (self.corpus_dir / STAGING).exists():
            with writer_lock(self.index_dir, self.upload_wait):
                self._remove_staged()

    def _remove_staged(self) -> None:
        staging = self.corpus_dir / STAGING
        if staging.exists():
            log.warning("removing uploads left staged by an interrupted upload: %s",
                        ", ".join(p.name for p in staging.rglob("*") if p.is_file()) or "(none)")
            shutil.rmtree(staging, ignore_errors=True)

    def add_files(self, uploads: list[tuple[str, Path]]) -> list[Added]:
        """Validate each (name, path) upload, index the good ones and save them into the corpus folder.

        A file is rejected, and nothing saved, when it yields no article, repeats an article already
        in the archive, or reuses an id. Either a file is in the corpus folder and the published
        index, or in neither: if indexing fails nothing is saved and the previous index keeps serving.
        """
        why_not = self.can_add()
        if why_not:
            return [Added(name, "", (), (why_not,)) for name, _ in uploads]
        try:
            with self._uploading, writer_lock(self.index_dir, self.upload_wait):
                return self._add(uploads)
        except IndexBusy as e:
            return [Added(name, "", (), (f"not added: {e}",)) for name, _ in uploads]

    def _add(self, uploads: list[tuple[str, Path]]) -> list[Added]:
        assert self.corpus_dir is not None and self.splitter is not None
        self._remove_staged()
        self._checked = 0.0
        r = self.retriever  # the live generation, should `qa index` have published one meanwhile
        known = _IndexedTexts(r)
        ids = _IndexedIds(r)
        staging = self.corpus_dir / STAGING  # ours alone: we hold the writer lock
        staging.mkdir(parents=True)
        results, staged, articles = [], [], []
        for name, path in uploads:
            added, loaded = self._check_and_stage(name, Path(path), staging, known, ids)
            results.append(added)
            if added.accepted:
                staged.append(added.saved_as)
                articles += loaded
        if not staged:
            shutil.rmtree(staging, ignore_errors=True)
            return results
        try:
            build_index(self.corpus_dir, self.index_dir, self.splitter, r.encoder, mode_reason=r.manifest.mode_reason,
                        progress=False, staged=[staging / final for final in staged], caller_holds_lock=True)
            for final in staged:  # published: now the files join the corpus (they were indexed as if there)
                os.rename(staging / final, self.corpus_dir / final)
        except (IndexUnusable, OSError, ValueError) as e:
            log.exception("indexing uploads failed")
            shutil.rmtree(staging, ignore_errors=True)
            return [Added(a.name, "", (), (f"not added: indexing failed ({e}); the archive is unchanged",))
                    if a.accepted else a for a in results]
        shutil.rmtree(staging, ignore_errors=True)
        self._checked = 0.0
        _ = self.retriever  # serve the new generation from the next question on
        return results

    def _check_and_stage(self, name: str, path: Path, staging: Path, known: "_IndexedTexts",
                         ids: "_IndexedIds") -> tuple[Added, tuple]:
        """(what became of the upload, its articles): a good one is copied into staging under its final name."""
        try:
            safe = safe_filename(name)
            size = path.stat().st_size
        except ValueError as e:
            return Added(name, "", (), (str(e),)), ()
        except OSError as e:
            return Added(name, "", (), (f"the upload could not be read ({e.strerror or e})",)), ()
        if size > MAX_FILE_BYTES:
            return Added(name, "", (), (f"{size / 2**20:.1f} MB is over the {MAX_FILE_BYTES // 2**20} MB "
                                        "limit per file; split it into smaller files",)), ()
        final = self._free_name(safe, ids.with_({Path(f).stem for f in os.listdir(staging)}))
        staged = staging / final  # loaded under its final name, so that ids come out as they will in the corpus
        shutil.copyfile(path, staged)
        loaded = load_corpus(staged)
        notes = tuple(f"{p.path}: {p.message}" for p in loaded.problems)
        clash = [a.id for a in loaded.articles if a.id in ids]
        repeats = [(a.id, known[text_key(a.text)]) for a in loaded.articles if text_key(a.text) in known]
        if not loaded.articles:
            rejected = notes or ("no article found in the file",)
        elif clash:
            rejected = (f"id {clash[0]!r} is already used by an article in the archive; "
                        "give the new article another id",)
        elif repeats:
            new, old = repeats[0]
            rejected = (f"{new!r} repeats {old!r}, already in the archive"
                        + (f" (and {len(repeats) - 1} more)" if len(repeats) > 1 else "")
                        + "; remove the repeats and upload again",)
        else:
            rejected = ()
        if rejected:
            staged.unlink()
            return Added(name, "", (), rejected), ()
        for a in loaded.articles:
            known[text_key(a.text)] = a.id
            ids.add(a.id)
        return Added(name, final, tuple(a.id for a in loaded.articles), notes), loaded.articles

    def _free_name(self, safe: str, ids: set[str]) -> str:
        """safe, or safe with -2, -3 ... before the suffix: never an existing file or a used id."""
        stem, suffix = safe[: -len(Path(safe).suffix)], Path(safe).suffix
        name, n = safe, 1
        while (self.corpus_dir / name).exists() or Path(name).stem in ids:
            n += 1
            name = f"{stem}-{n}{suffix}"
        return name


class _IndexedTexts:
    """text_key -> id of the indexed articles (looked up in the index), plus those added here."""

    def __init__(self, r: Retriever):
        self.r, self.added = r, {}

    def __contains__(self, key: str) -> bool:
        return key in self.added or self.r.article_with_text_key(key) is not None

    def __getitem__(self, key: str) -> str:
        return self.added.get(key) or self.r.article_with_text_key(key)

    def __setitem__(self, key: str, article_id: str) -> None:
        self.added[key] = article_id


class _IndexedIds:
    """The ids of the indexed articles (looked up in the index), plus those added here."""

    def __init__(self, r: Retriever, extra: set[str] | None = None):
        self.r, self.extra = r, set(extra or ())

    def __contains__(self, article_id: str) -> bool:
        return article_id in self.extra or self.r.article(article_id) is not None

    def add(self, article_id: str) -> None:
        self.extra.add(article_id)

    def with_(self, more: set[str]) -> "_IndexedIds":
        return _IndexedIds(self.r, self.extra | more)


def _model_info(gen: Path | None) -> str:
    """What identifies gen's model: its name and, for a self-trained one, its training record (a
    retrained model has the same name but another record)."""
    if gen is None:
        return ""
    info = gen / selftrain.MODEL_DIR / selftrain.INFO_FILE
    return f"{Manifest.read(gen / 'manifest.json').model}\n{info.read_text(encoding='utf-8') if info.exists() else ''}"
