"""Load news articles from .txt/.md/.jsonl/.csv files into Article records, reporting what was skipped and why.

Reading: a .txt/.md file is one article, read whole; a .jsonl/.csv file is read as a stream, one line or row at a
time, so that a file of any size loads in the memory of one article. MAX_ARTICLE_BYTES limits one article: a
.txt/.md file, a .jsonl line or a .csv row over it is skipped with a Problem and the rest still loads.

Decoding: a UTF-8 byte-order mark is stripped and the bytes are decoded as UTF-8; bytes that are not UTF-8 (the
whole .txt/.md file, or a .jsonl/.csv line) are decoded as cp1252 and, if that fails too, as latin-1 (which
cannot fail), each fallback reported once per file. A UTF-16 byte-order mark means UTF-16. Files with NUL bytes
or mostly non-printable characters (judged on the first 64 KiB) are binary, and are skipped like empty files.
Bad content never raises: it becomes a Problem and the rest of the corpus still loads. Symbolic links are
followed only to files inside the corpus folder.
"""
from __future__ import annotations

import codecs
import csv
import email.utils
import errno
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from datetime import date, datetime
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".txt", ".md", ".jsonl", ".csv")
MAX_ARTICLE_BYTES = 50 * 2**20
MAX_FILE_BYTES = MAX_ARTICLE_BYTES  # what uploads.py and chat.py accept as one uploaded file
# Suffixes someone plausibly meant as articles: skipping these is reported, the rest are skipped quietly.
_ARTICLE_LIKE = (".json", ".ndjson", ".html", ".htm", ".xml", ".pdf", ".doc", ".docx", ".rtf", ".odt", ".tsv", ".text",
                 ".markdown")
_ALIASES = {"published": ("published", "date"), "text": ("text", "content", "body")}
_HEADER = re.compile(r"(title|source|url|published|date)\s*:\s*(.*)", re.I)
# The seed corpus's first line: `date 2020-05-11 Amnesty International on Monday…`
_SEED_DATE = re.compile(r"date\s*:?\s+(\d{4}-\d{2}-\d{2})(?:\s+(.*))?", re.I)
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>|<!--")
_YMD = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})")
_WEEKDAY = re.compile(r"^(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*\.?,?\s+", re.I)
_DATE_FORMATS = ("%d %B %Y", "%d %b %Y", "%B %d, %Y", "%b %d, %Y", "%B %d %Y", "%b %d %Y", "%d %B, %Y", "%b. %d, %Y")
_SNIFF_BYTES = 65536  # how much of a file decides its encoding and whether it is binary
_ESCAPED = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by the 'surrogateescape' handler
_BINARY = "skipped: binary file (NUL bytes or mostly non-printable characters), not text"

Report = Callable[[str, str], None]  # (where, message) of a Problem


@dataclass(frozen=True)
class Article:
    id: str
    title: str         # '' when unknown
    source: str        # the outlet, '' when unknown
    published: str     # 'YYYY-MM-DD', a full ISO datetime when a time was given, the raw value if unparseable, or ''
    url: str
    text: str          # the body; sentence offsets refer to this string
    origin: str        # file relative to the corpus root ('' for in-memory articles)
    content_hash: str  # sha1 hex of title/source/published/url/text


@dataclass(frozen=True)
class Problem:
    path: str     # file, or file:line for a row of a .jsonl/.csv, relative to the corpus root
    message: str  # what was wrong and what was done


@dataclass(frozen=True)
class LoadResult:
    articles: tuple[Article, ...]
    problems: tuple[Problem, ...]            # what walking the folder skipped, then each file's problems in order
    duplicates: tuple[tuple[str, str], ...]  # (id of the skipped duplicate, id of the article it duplicates)


@dataclass(frozen=True)
class CorpusFile:
    rel: str        # posix path relative to the corpus root (what Article.origin holds); the name for a single file
    path: Path
    size: int       # bytes, when the corpus was walked
    mtime_ns: int

    def sha1(self) -> str:
        """sha1 hex of the file's bytes as they are now, read in 1 MiB chunks; computed once per instance."""
        if "_sha1" not in self.__dict__:  # frozen: the cache bypasses __setattr__, and is not a field
            digest = hashlib.sha1()
            with self.path.open("rb") as f:
                while chunk := f.read(2**20):
                    digest.update(chunk)
            self.__dict__["_sha1"] = digest.hexdigest()
        return self.__dict__["_sha1"]


class CorpusReader:
    """Walks a corpus (folder or single file) once; streams its articles file by file.

    Ids: a .txt/.md file's path relative to the root without its suffix ('sub/x'; just the stem for a single
    file); a .jsonl/.csv row's `id`, or else `<file id>-<sha1(text)[:12]>`, which survives reordering.
    Articles whose whitespace-collapsed text equals one streamed earlier are skipped and listed in `duplicates`;
    articles reusing an earlier id with different text are skipped with a Problem.
    """

    def __init__(self, path: str | Path, exclude: Iterable[Path] = ()) -> None:
        """Lists the corpus's files; raises FileNotFoundError when `path` does not exist, reports the rest.
        exclude: folders left out (an index kept inside its corpus folder is not read as articles)."""
        root = Path(path)
        if not root.exists():
            raise FileNotFoundError(f"corpus path {str(root)!r} does not exist; pass a folder of articles or one "
                                    f"file ending in {', '.join(SUPPORTED_SUFFIXES)}")
        self.files: list[CorpusFile] = []
        self.problems: list[Problem] = []
        self.duplicates: list[tuple[str, str]] = []
        self._id_by_text: dict[str, str] = {}
        self._where_by_id: dict[str, str] = {}
        if root.is_dir():
            for rel, file in _walk(root, self.report, exclude):
                suffix = file.suffix.lower()
                if suffix in SUPPORTED_SUFFIXES:
                    self._list(rel, file)
                elif suffix in _ARTICLE_LIKE:
                    self.report(rel, f"skipped: {suffix} files are not supported; convert to one of "
                                      f"{', '.join(SUPPORTED_SUFFIXES)}")
                else:
                    log.debug("skipping %s: unsupported suffix", rel)
        elif root.suffix.lower() not in SUPPORTED_SUFFIXES:
            self.report(root.name, f"skipped: unsupported suffix {root.suffix or '(none)'!r}; "
                                    f"use one of {', '.join(SUPPORTED_SUFFIXES)}")
        elif not root.is_file():
            self.report(root.name, "skipped: not a regular file")
        else:
            self._list(root.name, root)

    def articles(self, files: Iterable[CorpusFile] | None = None) -> Iterator[Article]:
        """Articles of the given files (default: all), in order, one at a time; duplicates by text and
        id clashes handled across everything this reader has streamed so far, exactly as load_corpus does."""
        for file in self.files if files is None else files:
            for where, article in read_file(file, self.report):
                if self.admit(where, article):
                    yield article

    def _list(self, rel: str, path: Path) -> None:
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:  # bytes the file system gave that are no UTF-8: the store cannot name it
            self.report(rel.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace"),
                        "skipped: the file name is not valid UTF-8; rename the file")
            return
        try:
            stat = path.stat()
        except OSError as e:
            self.report(rel, f"skipped: cannot read file ({e.strerror or e})")
            return
        self.files.append(CorpusFile(rel, path, stat.st_size, stat.st_mtime_ns))

    def report(self, where: str, message: str) -> None:
        """Record a Problem (and log it); qa.distributed reports a remote read's problems here."""
        log.warning("%s: %s", where, message)
        self.problems.append(Problem(where, message))

    def admit(self, where: str, article: Article, key: str | None = None) -> bool:
        """True for an article to keep; a duplicate or an id clash is recorded instead. Call in stream
        order: the first of two articles with the same text or id is the one kept. key: its text_key,
        when known."""
        key = key or text_key(article.text)
        if key in self._id_by_text:
            log.info("%s: skipped %r, same text as %r", where, article.id, self._id_by_text[key])
            self.duplicates.append((article.id, self._id_by_text[key]))
            return False
        if article.id in self._where_by_id:
            self.report(where, f"skipped: id {article.id!r} is already used by {self._where_by_id[article.id]} "
                                "with different text; give one of them another id")
            return False
        self._id_by_text[key], self._where_by_id[article.id] = article.id, where
        for warning in article_warnings(article):
            self.report(where, warning)
        return True


def load_corpus(path: str | Path) -> LoadResult:
    """Load every article under `path`: a folder (recursive, sorted, hidden files skipped) or a single file.

    Ids and duplicates as in CorpusReader. Raises FileNotFoundError when `path` does not exist; everything else
    becomes a Problem.
    """
    reader = CorpusReader(path)
    found = tuple(reader.articles())
    return LoadResult(found, tuple(reader.problems), tuple(reader.duplicates))


def parse_text_article(raw: str, article_id: str, origin: str = "", markdown: bool = False) -> Article:
    """Parse the .txt/.md format: optional header lines at the top, then the body.

    Headers are `title:`, `source:`, `url:` and `published:`/`date:` lines (any case, any order, blank lines
    allowed between them), and the seed corpus's `date YYYY-MM-DD` prefix, whose line goes on with body text.
    The body keeps its internal text as given, with line endings normalised to '\\n' and outer whitespace
    stripped; a body that begins with such a `key: value` line is read as a header. markdown (a .md
    file): with no `title:` line, a heading on the body's first line ("# Storm in Oslo") is the title.
    Raises ValueError when the id is empty or no body text is left.
    """
    if not article_id:
        raise ValueError("article id must be a non-empty string")
    lines = raw.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    fields: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        seed, header = _SEED_DATE.fullmatch(line), _HEADER.fullmatch(line)
        if seed:
            fields["published"] = seed[1]
            if seed[2]:
                lines[i] = seed[2]
                break
        elif header:
            key = header[1].lower()
            fields["published" if key == "date" else key] = header[2]
        elif line:
            break
        i += 1
    body = "\n".join(lines[i:]).strip()
    if markdown and "title" not in fields and (m := _MD_HEADING.match(body)) and body[m.end():].strip():
        fields["title"], body = m[1], body[m.end():].strip()
    if not body:
        raise ValueError(f"article {article_id!r} has no body text after its header lines")
    return _make_article(article_id, body, origin, **fields)


_MD_HEADING = re.compile(r"#{1,6}[ \t]+([^\n]*?)[ \t#]*(?:\n|$)")  # "# Title", "## Title ##"


def article_warnings(article: Article) -> tuple[str, ...]:
    """What a reader should be told about a loaded article: literal HTML markup, an unrecognised date."""
    warnings = []
    if _TAG.search(article.text):
        warnings.append("contains HTML markup; indexed as literal text")
    if article.published and normalise_date(article.published) != article.published:
        warnings.append(f"published date {article.published!r} not recognised; kept as given")
    return tuple(warnings)


def normalise_date(raw: str) -> str | None:
    """ISO form of a date ('YYYY-MM-DD', or a full ISO datetime when a time is given); '' for '', None if unknown."""
    s = " ".join(raw.split())
    if not s:
        return ""
    if m := _YMD.fullmatch(s):
        try:
            return date(*map(int, m.groups())).isoformat()
        except ValueError:
            return None
    for parse in (date.fromisoformat, datetime.fromisoformat):
        try:
            return parse(s[:-1] + "+00:00" if s.endswith("Z") else s).isoformat()
        except ValueError:
            pass
    bare = _WEEKDAY.sub("", s)
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(bare, fmt).date().isoformat()
        except ValueError:
            pass
    try:  # RFC 2822, as in RSS feeds: 'Mon, 11 May 2020 10:00:00 +0000'
        return email.utils.parsedate_to_datetime(s).isoformat()
    except (TypeError, ValueError):
        return None


def filter_day(raw: str) -> str | None:
    """A date bound as a search filter takes it: '' for '', a year or a year and month as given (the
    filter takes its first or last day), else the ISO day of any date normalise_date reads; None if none."""
    s = (raw or "").strip()
    if re.fullmatch(r"\d{4}(-(0[1-9]|1[0-2]))?", s):
        return s
    day = normalise_date(s)
    return day if day is None else day[:10]


@lru_cache(maxsize=16)  # a build asks for an article's key thrice in a row: reading, admitting, storing
def text_key(text: str) -> str:
    """What makes two articles duplicates: the same text up to whitespace (sha1 hex)."""
    return hashlib.sha1(" ".join(text.split()).encode("utf-8")).hexdigest()


def _walk(root: Path, report: Report, exclude: Iterable[Path] = ()) -> list[tuple[str, Path]]:
    """Regular, non-hidden files under `root` as (posix path relative to root, path), sorted by that path.

    Links to folders are not followed (their files inside the corpus are found where they are); links
    to files are followed only when the file is inside the corpus. Others are reported, as are loops.
    Folders in exclude (and everything under them) are left out.
    """
    found = []
    real_root = root.resolve()
    left_out = {p.resolve() for p in exclude}
    if real_root in left_out:
        return found

    def unreadable(error: OSError) -> None:
        where = Path(error.filename or root).relative_to(root).as_posix()
        report(where, f"skipped: cannot read folder ({error.strerror})")

    for folder, dirs, files in os.walk(root, onerror=unreadable):
        dirs[:] = [d for d in dirs if not d.startswith(".") and Path(folder, d).resolve() not in left_out]
        for name in dirs:
            if Path(folder, name).is_symlink():
                _check_link(Path(folder, name), root, real_root, report)
        for name in files:
            file = Path(folder, name)
            if name.startswith(".") or (file.is_symlink() and not _check_link(file, root, real_root, report)):
                continue
            if file.is_file():
                found.append((file.relative_to(root).as_posix(), file))
    return sorted(found)


def _check_link(link: Path, root: Path, real_root: Path, report: Report) -> bool:
    """True when the symbolic link leads to something inside the corpus folder; else reports why not."""
    rel = link.relative_to(root).as_posix()
    try:
        target = link.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop this way
        report(rel, "skipped: symbolic link loop (the link leads back to itself)")
        return False
    except OSError as e:
        what = "symbolic link loop (the link leads back to itself)" if e.errno == errno.ELOOP \
            else f"symbolic link to nothing ({e.strerror})"
        report(rel, f"skipped: {what}")
        return False
    if target != real_root and real_root not in target.parents:
        report(rel, "skipped: symbolic link to outside the corpus folder; links are not followed out of it")
        return False
    return True


def read_file(file: CorpusFile, report: Report) -> Iterator[tuple[str, Article]]:
    """(where, article) for each article of one file; anything unforeseen ends that file with a Problem."""
    try:
        suffix = file.path.suffix.lower()
        if suffix == ".jsonl":
            yield from _load_jsonl(file, report)
        elif suffix == ".csv":
            yield from _load_csv(file, report)
        else:
            yield from _load_text(file, report)
    except OSError as e:
        report(file.rel, f"skipped: cannot read file ({e.strerror or e})")
    except Exception as e:  # one bad file must never stop the corpus; the traceback goes to the log
        log.exception("%s: unexpected error while loading", file.rel)
        report(file.rel, f"skipped: could not be read ({type(e).__name__}: {str(e)[:200]})")


def _load_text(file: CorpusFile, report: Report) -> Iterator[tuple[str, Article]]:
    limit = MAX_ARTICLE_BYTES
    with file.path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(limit + 1) if size <= limit else b""
    if max(size, len(data)) > limit:
        report(file.rel, f"skipped: {max(size, len(data)) / 2**20:.1f} MB is over the {_mb(limit)} limit per "
                         "article; split it into smaller files")
        return
    text, note = _decode(data)
    if text is None:
        report(file.rel, _BINARY)
        return
    if note:
        report(file.rel, note)
    if not text.strip():
        report(file.rel, "skipped: empty file")
        return
    try:
        yield file.rel, parse_text_article(text, _file_id(file.rel), file.rel, file.path.suffix.lower() == ".md")
    except ValueError as e:
        report(file.rel, f"skipped: {e}")


def _load_jsonl(file: CorpusFile, report: Report) -> Iterator[tuple[str, Article]]:
    limit, file_id = MAX_ARTICLE_BYTES, _file_id(file.rel)
    number, skipped = 0, 0  # skipped: characters of an over-long line read so far, dropped as they come
    for number, line, ended in _pieces(file, report, "\n", limit + 1):
        if skipped or not ended:
            skipped += len(line)
            if ended:
                report(f"{file.rel}:{number}", _too_long("line", skipped, limit))
                skipped = 0
            continue
        if not line.strip():
            continue
        where = f"{file.rel}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            report(where, f"skipped: invalid JSON ({e.msg} at column {e.colno})")
            continue
        except ValueError as e:  # e.g. an integer of more than sys.get_int_max_str_digits() digits
            report(where, f"skipped: unreadable JSON value ({str(e).split(';')[0]}); write long numbers as strings")
            continue
        except RecursionError:
            report(where, "skipped: JSON nested too deeply to read (thousands of [ or { inside each other); an "
                          "article is one flat object")
            continue
        if not isinstance(record, dict):
            report(where, f"skipped: expected a JSON object, got {type(record).__name__}")
        elif article := _record_article(record, where, file.rel, file_id, report):
            yield where, article
    if skipped:  # the file ended in the middle of an over-long line
        report(f"{file.rel}:{number}", _too_long("line", skipped, limit))


def _load_csv(file: CorpusFile, report: Report) -> Iterator[tuple[str, Article]]:
    limit, file_id = MAX_ARTICLE_BYTES, _file_id(file.rel)
    # Fields are bounded by the row limit in _csv_records; the csv module's own (global) limit must not cut first.
    csv.field_size_limit(max(csv.field_size_limit(), limit))
    records = _csv_records(file, report, limit)
    number, first = next(records, (0, ""))
    try:
        header = [name.strip().lower() for name in next(csv.reader((first,)), [])]
        if not any(name in header for name in _ALIASES["text"]):
            # A file of nothing but whitespace is reported as empty by _pieces once it has been read to the end.
            if first.strip() or any(record.strip() for _, record in records):
                report(file.rel, f"skipped: no text column (columns: {', '.join(header)}); the header row needs "
                                 "a 'text', 'content' or 'body' column")
            return
        for number, record in records:
            row = next(csv.reader((record,)), [])
            if any(cell.strip() for cell in row):
                where = f"{file.rel}:{number}"
                if article := _record_article(dict(zip(header, row)), where, file.rel, file_id, report):
                    yield where, article
    except csv.Error as e:
        report(f"{file.rel}:{number}", f"stopped reading: {e}; the rows before it were loaded")


# The csv module's parser states (excel dialect) that matter for where a record ends: a record goes on past
# the end of a line only while a quoted field is open (_QUOTED); _QUOTE is a '"' seen inside a quoted field.
_START, _UNQUOTED, _QUOTED, _QUOTE = range(4)


def _csv_records(file: CorpusFile, report: Report, limit: int) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each record of a .csv file, split where csv.reader would split them;
    a record over `limit` characters is reported at its first line and skipped without being kept whole."""
    parts: list[str] | None = []  # None while the record is over the limit
    start, size, state = 0, 0, _START
    for number, piece, ended in _pieces(file, report, "", limit + 1):
        start = start if size else number
        size += len(piece)
        state = _csv_state(piece, state)
        if parts is not None and size <= limit:
            parts.append(piece)
        else:
            parts = None
        if ended and state != _QUOTED:
            if parts is None:
                report(f"{file.rel}:{start}", _too_long("row", size, limit))
            else:
                yield start, "".join(parts)
            parts, size, state = [], 0, _START
    if size:  # the file ended inside a quoted field or an over-long line
        if parts is None:
            report(f"{file.rel}:{start}", _too_long("row", size, limit))
        else:
            yield start, "".join(parts)


def _csv_state(text: str, state: int) -> int:
    """The csv parser's state after reading `text` in `state`; follows its rules for the excel dialect (a '"'
    opens a quoted field only at the field's start, '""' inside one is a quote, anything else is literal)."""
    i, n = 0, len(text)
    while i < n:
        j = text.find('"', i)
        if state == _QUOTED:
            if j < 0:
                return _QUOTED
            state, i = _QUOTE, j + 1
            continue
        if j < 0:  # no quote left: only the last character matters
            return _START if text[-1] == "," else _UNQUOTED
        if j > i:
            state = _START if text[j - 1] == "," else _UNQUOTED
        state, i = (_UNQUOTED if state == _UNQUOTED else _QUOTED), j + 1
    return state


def _pieces(file: CorpusFile, report: Report, newline: str, size: int) -> Iterator[tuple[int, str, bool]]:
    """A .jsonl/.csv file as (line number, text, ended): a whole line, or a piece of `size` characters of a longer
    one (ended False), so that no more than `size` characters of the file are held at once. `newline` as in
    open(). Reports a binary file (and yields nothing), each fallback encoding once, and a blank file."""
    with file.path.open("rb") as raw:
        encoding = _sniff(raw.read(_SNIFF_BYTES))
        if encoding is None:
            report(file.rel, _BINARY)
            return
        raw.seek(0)
        # Undecodable bytes survive as surrogates, so each line can fall back to cp1252 on its own.
        text = io.TextIOWrapper(raw, encoding, "replace" if encoding == "utf-16" else "surrogateescape", newline)
        ends = ("\n",) if newline == "\n" else ("\n", "\r")
        number, blank, noted = 1, True, set()
        while piece := text.readline(size):
            ended = len(piece) < size or piece.endswith(ends)
            piece, note = _redecode(piece)
            if note and note not in noted:
                noted.add(note)
                report(file.rel, note)
            blank = blank and not piece.strip()
            yield number, piece, ended
            number += ended
        if blank:
            report(file.rel, "skipped: empty file")


def _sniff(head: bytes) -> str | None:
    """The encoding to stream a file with, judged from its first bytes; None when they look binary."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding, sample = "utf-16", head.decode("utf-16", "replace")
    elif b"\x00" in head:
        return None
    else:  # the incremental decoder leaves a character cut at the end of `head` out
        encoding = "utf-8-sig"
        sample = _redecode(codecs.getincrementaldecoder(encoding)("surrogateescape").decode(head))[0]
    return None if _unprintable(sample) else encoding


def _decode(data: bytes) -> tuple[str | None, str]:
    """(text, note about a fallback encoding, '' if none); text is None when the bytes are binary."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text, note = data.decode("utf-16", "replace"), ""
    elif b"\x00" in data:
        return None, ""
    else:
        text, note = _fallback(data.removeprefix(codecs.BOM_UTF8))
    return (None, "") if _unprintable(text) else (text, note)


def _fallback(data: bytes) -> tuple[str, str]:
    """(text, note): `data` decoded as UTF-8, else cp1252, else latin-1, with a note saying which fallback."""
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "not valid UTF-8; decoded as cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "not valid UTF-8 or cp1252; decoded as latin-1"


def _redecode(text: str) -> tuple[str, str]:
    """Text decoded with 'surrogateescape', decoded again by _fallback when it holds bytes that were not UTF-8."""
    if not _ESCAPED.search(text):
        return text, ""
    return _fallback(text.encode("utf-8", "surrogateescape"))


def _unprintable(text: str) -> bool:
    sample = text[:65536]
    return sum(not (c.isprintable() or c.isspace()) for c in sample) > 0.1 * len(sample)


def _too_long(what: str, size: int, limit: int) -> str:
    return (f"skipped: {what} of {size / 2**20:.1f} MB is over the {_mb(limit)} limit per article; an article "
            "this long is most likely a broken export")


def _mb(size: int) -> str:
    return f"{size / 2**20:g} MB"


def _file_id(rel: str) -> str:
    return PurePosixPath(rel).with_suffix("").as_posix()


def _record_article(record: dict, where: str, rel: str, file_id: str, report: Report) -> Article | None:
    """One .jsonl object or .csv row: only text is required; without an id it gets `<file id>-<sha1(text)[:12]>`."""
    values = {}
    for field in ("id", "title", "source", "published", "url", "text"):
        names = _ALIASES.get(field, (field,))
        name, value = next(((n, record[n]) for n in names if record.get(n) not in (None, "")), (field, ""))
        if field == "id" and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            report(where, f"skipped: {name!r} must be a string, got {type(value).__name__}")
            return None
        values[field] = value
    text = _clean(values.pop("text"))
    if not text:
        report(where, "skipped: missing or empty 'text'")
        return None
    article_id = values.pop("id").strip() or f"{file_id}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:12]}"
    return _make_article(article_id, text, rel, **values)


def _clean(text: str) -> str:
    # Lone surrogates (legal in JSON escapes) cannot be encoded, so they become '?'.
    return text.encode("utf-8", "replace").decode("utf-8").replace("\r\n", "\n").replace("\r", "\n").strip()


def _make_article(article_id: str, text: str, origin: str, title: str = "", source: str = "", published: str = "",
                  url: str = "") -> Article:
    title, source = " ".join(_clean(title).split()), " ".join(_clean(source).split())
    url, text = _clean(url), _clean(text)
    published = normalise_date(_clean(published)) or _clean(published)
    digest = hashlib.sha1("\x1f".join((title, source, published, url, text)).encode("utf-8")).hexdigest()
    return Article(article_id, title, source, published, url, text, origin, digest)
