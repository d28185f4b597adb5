"""Adding articles to a served archive: safe file names, validation, incremental indexing, hot reload."""
from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tempfile
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from qa.articles import MAX_FILE_BYTES, SUPPORTED_SUFFIXES, load_corpus
from qa.index import IndexUnusable, build_index
from qa.retrieve import Retriever
from qa.sentences import Splitter

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 80


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
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    suffix = Path(base).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(f"{suffix or 'no suffix'} is not an article format; upload "
                         f"{', '.join(SUPPORTED_SUFFIXES)} files")
    stem = _UNSAFE.sub("-", base[: -len(suffix)]).strip(".-_")[:MAX_NAME] or "upload"
    return stem + suffix


def _text_key(text: str) -> str:
    # The loader's duplicate test: the same text up to whitespace.
    return hashlib.sha1(" ".join(text.split()).encode("utf-8")).hexdigest()


class LiveIndex:
    """The index being served: readers use .retriever while add_files indexes uploads into a new
    generation and then swaps in a Retriever over it. Builds run one at a time."""

    def __init__(self, retriever: Retriever, index_dir: str | Path, corpus_dir: str | Path | None,
                 splitter: Splitter | None):
        self.retriever = retriever
        self.index_dir = Path(index_dir)
        self.corpus_dir = Path(corpus_dir) if corpus_dir else None
        self.splitter = splitter
        self._lock = threading.Lock()

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

    def add_files(self, uploads: list[tuple[str, Path]]) -> list[Added]:
        """Validate each (name, path) upload, save the good ones into the corpus folder and index them.

        A file is rejected, and nothing saved, when it yields no article, repeats an article already
        in the archive, or reuses an id. If indexing fails the saved files are removed again and the
        previous index keeps serving.
        """
        why_not = self.can_add()
        if why_not:
            return [Added(name, "", (), (why_not,)) for name, _ in uploads]
        with self._lock:
            return self._add(uploads)

    def _add(self, uploads: list[tuple[str, Path]]) -> list[Added]:
        assert self.corpus_dir is not None and self.splitter is not None
        self.corpus_dir.mkdir(parents=True, exist_ok=True)
        db = self.retriever.db
        known = {_text_key(text): aid for aid, text in db.execute("SELECT id, text FROM articles")}
        ids = set(known.values())
        results, saved = [], []
        for name, path in uploads:
            added = self._check_and_save(name, Path(path), known, ids)
            results.append(added)
            if added.accepted:
                saved.append(self.corpus_dir / added.saved_as)
        if not saved:
            return results
        r = self.retriever
        try:
            build_index(self.corpus_dir, self.index_dir, self.splitter, r.encoder,
                        mode_reason=r.manifest.mode_reason, progress=False)
            self.retriever = Retriever.load(self.index_dir, encoder=r.encoder, load_model=False)
        except (IndexUnusable, OSError, ValueError) as e:
            log.exception("indexing uploads failed")
            for file in saved:
                file.unlink(missing_ok=True)
            return [Added(a.name, "", (), (f"not added: indexing failed ({e}); the archive is unchanged",))
                    if a.accepted else a for a in results]
        return results

    def _check_and_save(self, name: str, path: Path, known: dict[str, str], ids: set[str]) -> Added:
        try:
            safe = safe_filename(name)
            size = path.stat().st_size
        except ValueError as e:
            return Added(name, "", (), (str(e),))
        except OSError as e:
            return Added(name, "", (), (f"the upload could not be read ({e.strerror or e})",))
        if size > MAX_FILE_BYTES:
            return Added(name, "", (), (f"{size / 2**20:.1f} MB is over the {MAX_FILE_BYTES // 2**20} MB "
                                        "limit per file; split it into smaller files",))
        final = self._free_name(safe, ids)
        with tempfile.TemporaryDirectory() as tmp:
            # Loaded under its final name, so that ids come out as they will in the corpus.
            staged = Path(tmp) / final
            shutil.copyfile(path, staged)
            loaded = load_corpus(staged)
            notes = tuple(f"{p.path}: {p.message}" for p in loaded.problems)
            if not loaded.articles:
                return Added(name, "", (), notes or ("no article found in the file",))
            clash = [a.id for a in loaded.articles if a.id in ids]
            if clash:
                return Added(name, "", (), (f"id {clash[0]!r} is already used by an article in the archive; "
                                            "give the new article another id",))
            repeats = [(a.id, known[_text_key(a.text)]) for a in loaded.articles if _text_key(a.text) in known]
            if repeats:
                new, old = repeats[0]
                return Added(name, "", (), (f"{new!r} repeats {old!r}, already in the archive"
                                            + (f" (and {len(repeats) - 1} more)" if len(repeats) > 1 else "")
                                            + "; remove the repeats and upload again",))
            with open(self.corpus_dir / final, "xb") as out, open(staged, "rb") as src:
                shutil.copyfileobj(src, out)
        for a in loaded.articles:
            known[_text_key(a.text)] = a.id
            ids.add(a.id)
        return Added(name, final, tuple(a.id for a in loaded.articles), notes)

    def _free_name(self, safe: str, ids: set[str]) -> str:
        """safe, or safe with -2, -3 ... before the suffix: never an existing file or a used id."""
        stem, suffix = safe[: -len(Path(safe).suffix)], Path(safe).suffix
        name, n = safe, 1
        while (self.corpus_dir / name).exists() or Path(name).stem in ids:
            n += 1
            name = f"{stem}-{n}{suffix}"
        return name
