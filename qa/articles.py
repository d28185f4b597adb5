"""Load news articles from .txt/.md/.jsonl/.csv files into Article records, reporting what was skipped and why.

Decoding, per file: a UTF-8 byte-order mark is stripped and the bytes are decoded as UTF-8; if that fails they are
decoded as cp1252 and, if that fails too, as latin-1 (which cannot fail), each fallback reported as a Problem.
A UTF-16 byte-order mark means UTF-16. Files with NUL bytes or mostly non-printable characters are binary, and
are skipped like empty files and files over MAX_FILE_BYTES. Bad content never raises: it becomes a Problem and
the rest of the corpus still loads. Symbolic links are followed only to files inside the corpus folder.
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
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".txt", ".md", ".jsonl", ".csv")
MAX_FILE_BYTES = 50 * 2**20
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
    problems: tuple[Problem, ...]            # skipped files/rows and warnings, in file order
    duplicates: tuple[tuple[str, str], ...]  # (id of the skipped duplicate, id of the article it duplicates)


def load_corpus(path: str | Path) -> LoadResult:
    """Load every article under `path`: a folder (recursive, sorted, hidden files skipped) or a single file.

    Ids: a .txt/.md file's path relative to the root without its suffix ('sub/x'; just the stem for a single
    file); a .jsonl/.csv row's `id`, or else `<file id>-<sha1(text)[:12]>`, which survives reordering.
    Later articles whose whitespace-collapsed text equals an earlier one are skipped and listed in `duplicates`;
    later articles reusing an earlier id with different text are skipped with a Problem.
    Raises FileNotFoundError when `path` does not exist; everything else becomes a Problem.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"corpus path {str(root)!r} does not exist; pass a folder of articles or one "
                                f"file ending in {', '.join(SUPPORTED_SUFFIXES)}")
    out = _Collector()
    if root.is_dir():
        for rel, file in _walk(root, out):
            suffix = file.suffix.lower()
            if suffix in SUPPORTED_SUFFIXES:
                _load_file_safely(file, rel, out)
            elif suffix in _ARTICLE_LIKE:
                out.problem(rel, f"skipped: {suffix} files are not supported; convert to one of "
                                 f"{', '.join(SUPPORTED_SUFFIXES)}")
            else:
                log.debug("skipping %s: unsupported suffix", rel)
    elif root.suffix.lower() not in SUPPORTED_SUFFIXES:
        out.problem(root.name, f"skipped: unsupported suffix {root.suffix or '(none)'!r}; "
                               f"use one of {', '.join(SUPPORTED_SUFFIXES)}")
    elif not root.is_file():
        out.problem(root.name, "skipped: not a regular file")
    else:
        _load_file_safely(root, root.name, out)
    return LoadResult(tuple(out.articles), tuple(out.problems), tuple(out.duplicates))


def parse_text_article(raw: str, article_id: str, origin: str = "") -> Article:
    """Parse the .txt/.md format: optional header lines at the top, then the body.

    Headers are `title:`, `source:`, `url:` and `published:`/`date:` lines (any case, any order, blank lines
    allowed between them), and the seed corpus's `date YYYY-MM-DD` prefix, whose line goes on with body text.
    The body keeps its internal text as given, with line endings normalised to '\\n' and outer whitespace
    stripped; a body that begins with such a `key: value` line is read as a header.
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
    if not body:
        raise ValueError(f"article {article_id!r} has no body text after its header lines")
    return _make_article(article_id, body, origin, **fields)


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


def text_key(text: str) -> str:
    """What makes two articles duplicates: the same text up to whitespace (sha1 hex)."""
    return hashlib.sha1(" ".join(text.split()).encode("utf-8")).hexdigest()


class _Collector:
    """Gathers articles and problems in file order, skipping duplicates as they arrive."""

    def __init__(self) -> None:
        self.articles: list[Article] = []
        self.problems: list[Problem] = []
        self.duplicates: list[tuple[str, str]] = []
        self._id_by_text: dict[str, str] = {}
        self._where_by_id: dict[str, str] = {}

    def problem(self, where: str, message: str) -> None:
        log.warning("%s: %s", where, message)
        self.problems.append(Problem(where, message))

    def add(self, where: str, article: Article) -> None:
        key = text_key(article.text)
        if key in self._id_by_text:
            log.info("%s: skipped %r, same text as %r", where, article.id, self._id_by_text[key])
            self.duplicates.append((article.id, self._id_by_text[key]))
        elif article.id in self._where_by_id:
            self.problem(where, f"skipped: id {article.id!r} is already used by {self._where_by_id[article.id]} "
                                "with different text; give one of them another id")
        else:
            self._id_by_text[key], self._where_by_id[article.id] = article.id, where
            self.articles.append(article)
            for warning in article_warnings(article):
                self.problem(where, warning)


def _walk(root: Path, out: _Collector) -> list[tuple[str, Path]]:
    """Regular, non-hidden files under `root` as (posix path relative to root, path), sorted by that path.

    Links to folders are not followed (their files inside the corpus are found where they are); links
    to files are followed only when the file is inside the corpus. Others are reported, as are loops.
    """
    found = []
    real_root = root.resolve()

    def report(error: OSError) -> None:
        where = Path(error.filename or root).relative_to(root).as_posix()
        out.problem(where, f"skipped: cannot read folder ({error.strerror})")

    for folder, dirs, files in os.walk(root, onerror=report):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in dirs:
            if Path(folder, name).is_symlink():
                _check_link(Path(folder, name), root, real_root, out)
        for name in files:
            file = Path(folder, name)
            if name.startswith(".") or (file.is_symlink() and not _check_link(file, root, real_root, out)):
                continue
            if file.is_file():
                found.append((file.relative_to(root).as_posix(), file))
    return sorted(found)


def _check_link(link: Path, root: Path, real_root: Path, out: _Collector) -> bool:
    """True when the symbolic link leads to something inside the corpus folder; else reports why not."""
    rel = link.relative_to(root).as_posix()
    try:
        target = link.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop this way
        out.problem(rel, "skipped: symbolic link loop (the link leads back to itself)")
        return False
    except OSError as e:
        what = "symbolic link loop (the link leads back to itself)" if e.errno == errno.ELOOP \
            else f"symbolic link to nothing ({e.strerror})"
        out.problem(rel, f"skipped: {what}")
        return False
    if target != real_root and real_root not in target.parents:
        out.problem(rel, "skipped: symbolic link to outside the corpus folder; links are not followed out of it")
        return False
    return True


def _load_file_safely(file: Path, rel: str, out: _Collector) -> None:
    """_load_file, with anything unforeseen in one file reported as that file's problem."""
    try:
        _load_file(file, rel, out)
    except Exception as e:  # one bad file must never stop the corpus; the traceback goes to the log
        log.exception("%s: unexpected error while loading", rel)
        out.problem(rel, f"skipped: could not be read ({type(e).__name__}: {str(e)[:200]})")


def _load_file(file: Path, rel: str, out: _Collector) -> None:
    try:
        size = file.stat().st_size
        if size > MAX_FILE_BYTES:
            out.problem(rel, f"skipped: {size / 2**20:.1f} MB is over the {MAX_FILE_BYTES // 2**20} MB limit per "
                             "file; split it into smaller files")
            return
        data = file.read_bytes()
    except OSError as e:
        out.problem(rel, f"skipped: cannot read file ({e.strerror or e})")
        return
    text, note = _decode(data)
    if text is None:
        out.problem(rel, "skipped: binary file (NUL bytes or mostly non-printable characters), not text")
        return
    if note:
        out.problem(rel, note)
    if not text.strip():
        out.problem(rel, "skipped: empty file")
        return
    suffix = file.suffix.lower()
    file_id = PurePosixPath(rel).with_suffix("").as_posix()
    if suffix == ".jsonl":
        _load_jsonl(text, rel, file_id, out)
    elif suffix == ".csv":
        _load_csv(text, rel, file_id, out)
    else:
        try:
            out.add(rel, parse_text_article(text, file_id, rel))
        except ValueError as e:
            out.problem(rel, f"skipped: {e}")


def _decode(data: bytes) -> tuple[str | None, str]:
    """(text, note about a fallback encoding, '' if none); text is None when the bytes are binary."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text, note = data.decode("utf-16", "replace"), ""
    elif b"\x00" in data:
        return None, ""
    else:
        data = data.removeprefix(codecs.BOM_UTF8)
        try:
            text, note = data.decode("utf-8"), ""
        except UnicodeDecodeError:
            try:
                text, note = data.decode("cp1252"), "not valid UTF-8; decoded as cp1252"
            except UnicodeDecodeError:
                text, note = data.decode("latin-1"), "not valid UTF-8 or cp1252; decoded as latin-1"
    sample = text[:65536]
    if sum(not (c.isprintable() or c.isspace()) for c in sample) > 0.1 * len(sample):
        return None, ""
    return text, note


def _load_jsonl(text: str, rel: str, file_id: str, out: _Collector) -> None:
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{rel}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            out.problem(where, f"skipped: invalid JSON ({e.msg} at column {e.colno})")
            continue
        except ValueError as e:  # e.g. an integer of more than sys.get_int_max_str_digits() digits
            out.problem(where, f"skipped: unreadable JSON value ({str(e).split(';')[0]}); write long "
                               "numbers as strings")
            continue
        except RecursionError:
            out.problem(where, "skipped: JSON nested too deeply to read (thousands of [ or { inside each "
                               "other); an article is one flat object")
            continue
        if isinstance(record, dict):
            _add_record(record, where, rel, file_id, out)
        else:
            out.problem(where, f"skipped: expected a JSON object, got {type(record).__name__}")


def _load_csv(text: str, rel: str, file_id: str, out: _Collector) -> None:
    # Article bodies outgrow the csv module's default 128 KiB field limit.
    csv.field_size_limit(max(csv.field_size_limit(), MAX_FILE_BYTES))
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip().lower() for name in next(reader)]
        if not any(name in header for name in _ALIASES["text"]):
            out.problem(rel, f"skipped: no text column (columns: {', '.join(header)}); the header row needs a "
                             "'text', 'content' or 'body' column")
            return
        start = reader.line_num + 1
        for row in reader:
            if any(cell.strip() for cell in row):
                _add_record(dict(zip(header, row)), f"{rel}:{start}", rel, file_id, out)
            start = reader.line_num + 1
    except csv.Error as e:
        out.problem(f"{rel}:{reader.line_num}", f"stopped reading: {e}; the rows before it were loaded")


def _add_record(record: dict, where: str, rel: str, file_id: str, out: _Collector) -> None:
    """One .jsonl object or .csv row: only text is required; without an id it gets `<file id>-<sha1(text)[:12]>`."""
    values = {}
    for field in ("id", "title", "source", "published", "url", "text"):
        names = _ALIASES.get(field, (field,))
        name, value = next(((n, record[n]) for n in names if record.get(n) not in (None, "")), (field, ""))
        if field == "id" and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            out.problem(where, f"skipped: {name!r} must be a string, got {type(value).__name__}")
            return
        values[field] = value
    text = _clean(values.pop("text"))
    if not text:
        out.problem(where, "skipped: missing or empty 'text'")
        return
    article_id = values.pop("id").strip() or f"{file_id}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:12]}"
    out.add(where, _make_article(article_id, text, rel, **values))


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
