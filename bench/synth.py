"""Synthetic news archives of a given size, made deterministically from BBC News, AG News and SQuAD.

Every source article (BBC News, AG News test rows, SQuAD v1.1 dev paragraphs; exact repeats dropped)
is split once with the project's splitter. Replica 0 of an article is its text as it is; replica
r >= 1 shuffles its sentences into new paragraphs, adds r to every number and swaps capitalised
words among the archive's own pool of them (the same word the same way throughout the replica).
Each replica is a new article: its own id, an outlet with the replica as suffix ("BBC-3") and a
date drawn over 2018-2025, so date filters select something real. Replicas are written pass by
pass, in a shuffled order of the sources per pass, until the sentence count reaches the target.

Sentences are counted from the source splits; the count the splitter gives on the written texts is
measured on a sample and the target scaled by it, so the index holds about the target (the bench
reports the index's real count). The next 1,000 articles of the same stream are written apart, for
measuring an add to a built index.

    python bench/synth.py 100k [--data ../shared/data] [--cache /tmp/qa-scale] [--seed 0] [--file-mb 20]

Writes CACHE/archive-<N>/corpus/part-NNNN.jsonl (fields id, title, source, published, url, text),
CACHE/archive-<N>/extra/add-1k.jsonl and CACHE/archive-<N>/archive.json, outside the repository:
the data is for research only (../shared/data/SOURCES.md). An archive already written with the
same settings is reused. Exits 0 with a reason when the data is absent.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import html
import json
import os
import random
import re
import shutil
import sys
import time
import zlib
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qa.sentences import Splitter, load_splitter  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data"
DEFAULT_CACHE = Path("/tmp/qa-scale")
GENERATOR = "synth v2"  # bump when the articles written for a seed change
EXTRA_ARTICLES = 1_000
FIRST_DATE, DAYS = date(2018, 1, 1), 8 * 365
CALIBRATION_SAMPLE = 400  # articles split again to calibrate the sentence count
# A number, with its thousands separators and decimals: "464,000", "1.13"; only the whole part is shifted.
_NUMBER = re.compile(r"(?<![\d.,])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?")
# A capitalised word after a lowercase word or punctuation inside a sentence: mostly names and places.
_NAME = re.compile(r"(?<=[a-z0-9,;:] )[A-Z][a-z]{2,}\b")
_TAG = re.compile(r"<[^>]*>")


@dataclass(frozen=True)
class Source:
    key: str  # unique and stable: "bbc-business-001", "ag-00042", "squad-Normans-3"
    outlet: str  # "BBC", "AG" or "SQuAD"
    title: str
    text: str
    sentences: tuple[str, ...]


@dataclass(frozen=True)
class Archive:
    folder: Path
    corpus: Path  # the folder to index: part-NNNN.jsonl files
    extra: Path  # one .jsonl of EXTRA_ARTICLES further articles
    meta: dict  # what archive.json says


def parse_size(text: str) -> int:
    """'100k' -> 100000, '1M' -> 1000000, '25000' -> 25000."""
    t = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    try:
        return int(float(t.rstrip("km")) * scale)
    except ValueError:
        raise SystemExit(f"size {text!r} is not a number like 20k, 100k or 1M") from None


def missing_data(data: Path) -> Path | None:
    """The first required data file that is absent, else None."""
    for need in (data / "news" / "bbc-news.csv.gz", data / "news" / "ag_news" / "test.csv.gz",
                 data / "squad" / "dev-v1.1.json.gz"):
        if not need.exists():
            return need
    return None


def read_raw(data: Path) -> Iterator[tuple[str, str, str, str]]:
    """(key, outlet, title, text) of every source article, in file order."""
    with gzip.open(data / "news" / "bbc-news.csv.gz", "rt", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            yield f"bbc-{row['id'].replace('/', '-')}", "BBC", row["title"], row["text"]
    with gzip.open(data / "news" / "ag_news" / "test.csv.gz", "rt", encoding="utf-8", newline="") as f:
        for i, (_, title, text) in enumerate(csv.reader(f)):
            yield f"ag-{i:05d}", "AG", clean_ag(title), clean_ag(text)
    squad = json.load(gzip.open(data / "squad" / "dev-v1.1.json.gz", "rt", encoding="utf-8"))["data"]
    for article in squad:
        for j, p in enumerate(article["paragraphs"]):
            yield f"squad-{article['title']}-{j}", "SQuAD", article["title"].replace("_", " "), p["context"]


def clean_ag(text: str) -> str:
    """AG News escapes: '\\' for a line break, '#39;' for &#39;, 'quot;' for &quot;, some markup."""
    text = re.sub(r"#(\d+);", r"&#\1;", text.replace("\\", " "))
    text = html.unescape(re.sub(r"(?<!&)\b(quot|amp|lt|gt);", r"&\1;", text))
    return " ".join(_TAG.sub(" ", text).split())


def text_key(text: str) -> bytes:
    """Two texts equal up to whitespace have the same key (the loader indexes such repeats once)."""
    return hashlib.sha1(" ".join(text.split()).encode("utf-8")).digest()[:12]


def load_sources(data: Path, splitter: Splitter, cache: Path) -> list[Source]:
    """Every distinct source article, split; cached per splitter and data files (splitting takes a minute)."""
    files = sorted(p for p in data.rglob("*.gz"))
    tag = hashlib.sha1(json.dumps([GENERATOR, splitter.name, [(p.name, p.stat().st_size) for p in files]]
                                  ).encode()).hexdigest()[:12]
    cached = cache / f"sources-{tag}.json"
    if cached.exists():
        return [Source(**{**s, "sentences": tuple(s["sentences"])})
                for s in json.loads(cached.read_text(encoding="utf-8"))]
    seen, out = set(), []
    for key, outlet, title, text in read_raw(data):
        text = text.strip()
        if not text or text_key(text) in seen:
            continue
        seen.add(text_key(text))
        out.append(Source(key, outlet, title, text, tuple(text[a:b] for a, b, _ in splitter.spans(text))))
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps([s.__dict__ for s in out]), encoding="utf-8")
    os.replace(tmp, cached)
    return out


def name_pool(sources: list[Source]) -> list[str]:
    """Capitalised words seen inside sentences at least twice, sorted: what replicas swap among."""
    counts: dict[str, int] = {}
    for s in sources:
        for w in _NAME.findall(s.text):
            counts[w] = counts.get(w, 0) + 1
    return sorted(w for w, c in counts.items() if c >= 2)


class Replicator:
    """Makes replica r of a source: the source itself for r = 0, else shuffled, renumbered and renamed."""

    def __init__(self, pool: list[str], seed: int):
        self.pool, self.names, self.seed = pool, frozenset(pool), seed

    def record(self, src: Source, r: int) -> dict:
        rng = random.Random(f"{self.seed}:{src.key}:{r}")
        published = (FIRST_DATE + timedelta(days=rng.randrange(DAYS))).isoformat()
        if r == 0:
            title, text = src.title, src.text
        else:
            title, text = self.change(src.title, r), self.body(src, r, rng)
        aid = f"{src.key}-r{r}"
        return {"id": aid, "title": title, "source": f"{src.outlet}-{r}", "published": published,
                "url": f"https://synthetic.invalid/{aid}", "text": text}

    def body(self, src: Source, r: int, rng: random.Random) -> str:
        order = list(src.sentences)
        rng.shuffle(order)
        paragraphs, i = [], 0
        while i < len(order):
            n = rng.choice((1, 2, 2, 3))
            paragraphs.append(" ".join(self.change(s, r) for s in order[i:i + n]))
            i += n
        return "\n\n".join(paragraphs)

    def change(self, text: str, r: int) -> str:
        """Every number plus r; about half of the pool's names swapped for others, the same way
        throughout replica r."""
        text = _NUMBER.sub(lambda m: shift(m, r), text)
        return _NAME.sub(lambda m: self.swap(m[0], r), text)

    def swap(self, word: str, r: int) -> str:
        if word not in self.names:
            return word
        h = zlib.crc32(f"{self.seed}:{r}:{word}".encode())
        return word if h % 2 else self.pool[(h >> 1) % len(self.pool)]


def shift(number: re.Match, by: int) -> str:
    whole, decimals = number[1], number[2] or ""
    if len(whole) > 12:  # an id or a code, not a quantity
        return number[0]
    n = int(whole.replace(",", "")) + by
    return (f"{n:,}" if "," in whole else str(n)) + decimals


def stream(sources: list[Source], replicator: Replicator, seed: int) -> Iterator[tuple[dict, int]]:
    """(record, sentences before re-splitting) for replica 0 of every source, then replica 1, …;
    texts that repeat one already given are left out."""
    seen: set[bytes] = set()
    r = 0
    while True:
        order = list(sources)
        random.Random(f"{seed}:order:{r}").shuffle(order)
        for src in order:
            rec = replicator.record(src, r)
            key = text_key(rec["text"])
            if key not in seen:
                seen.add(key)
                yield rec, len(src.sentences)
        r += 1


def calibrate(records: list[tuple[dict, int]], splitter: Splitter) -> tuple[float, int]:
    """(sentences the splitter finds / sentences estimated, sample size) on an even sample of records."""
    step = max(1, len(records) // CALIBRATION_SAMPLE)
    sample = records[::step]
    found = sum(len(splitter.spans(rec["text"])) for rec, _ in sample)
    estimated = sum(n for _, n in sample)
    return found / max(1, estimated), len(sample)


def write_jsonl(records: list[dict], folder: Path, file_bytes: int, prefix: str) -> list[str]:
    """Write records to folder/prefix-NNNN.jsonl, a new file when one reaches file_bytes; the names."""
    folder.mkdir(parents=True, exist_ok=True)
    names, f, size = [], None, 0
    for rec in records:
        line = (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")
        if f is None or size + len(line) > file_bytes:
            if f:
                f.close()
            names.append(f"{prefix}-{len(names) + 1:04d}.jsonl")
            f, size = open(folder / names[-1], "wb"), 0
        f.write(line)
        size += len(line)
    if f:
        f.close()
    return names


def tertiles(records: list[dict]) -> tuple[str, str]:
    """The dates a third and two thirds of the way through the records' dates."""
    dates = sorted(r["published"] for r in records)
    return dates[len(dates) // 3], dates[2 * len(dates) // 3]


def settings(target: int, seed: int, file_mb: float, splitter: Splitter) -> dict:
    return {"generator": GENERATOR, "target_sentences": target, "seed": seed, "file_mb": file_mb,
            "splitter": splitter.name}


def ensure_archive(target: int, data: Path = DEFAULT_DATA, cache: Path = DEFAULT_CACHE, seed: int = 0,
                   file_mb: float = 20.0, log=print) -> Archive:
    """The archive of about target sentences in cache (written now unless the same one is there)."""
    splitter = load_splitter()
    folder = cache / f"archive-{target}"
    wanted = settings(target, seed, file_mb, splitter)
    meta_file = folder / "archive.json"
    if meta_file.exists():
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if {k: meta.get(k) for k in wanted} == wanted:
            return Archive(folder, folder / "corpus", folder / "extra" / "add-1k.jsonl", meta)
    t0 = time.perf_counter()
    sources = load_sources(data, splitter, cache)
    log(f"synth: {len(sources):,} distinct source articles, {sum(len(s.sentences) for s in sources):,} "
        f"sentences ({time.perf_counter() - t0:.0f} s)")
    records, estimated, it = [], 0, stream(sources, Replicator(name_pool(sources), seed), seed)
    while estimated < target * 1.05 + 20_000:  # the calibration may ask for a few percent more
        rec, n = next(it)
        records.append((rec, n))
        estimated += n
    ratio, sampled = calibrate(records, splitter)
    keep, total = 0, 0
    while total * ratio < target:
        if keep == len(records):
            records.append(next(it))
        total += records[keep][1]
        keep += 1
    extra = [rec for rec, _ in records[keep:keep + EXTRA_ARTICLES]]
    while len(extra) < EXTRA_ARTICLES:
        extra.append(next(it)[0])
    chosen = [rec for rec, _ in records[:keep]]
    tmp = cache / f"archive-{target}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    files = write_jsonl(chosen, tmp / "corpus", int(file_mb * 2**20), "part")
    write_jsonl(extra, tmp / "extra", 2**62, "add-1k")
    (tmp / "extra" / "add-1k-0001.jsonl").rename(tmp / "extra" / "add-1k.jsonl")
    since, until = tertiles(chosen)
    outlets: dict[str, int] = {}
    for rec in chosen:
        outlet = rec["source"].split("-")[0]
        outlets[outlet] = outlets.get(outlet, 0) + 1
    meta = {**wanted, "articles": len(chosen), "estimated_sentences": round(total * ratio),
            "calibration": {"ratio": round(ratio, 4), "sample_articles": sampled},
            "replicas": 1 + max(int(rec["id"].rsplit("-r", 1)[1]) for rec in chosen), "outlets": outlets,
            "files": files, "extra_articles": len(extra), "first_date": FIRST_DATE.isoformat(),
            "last_date": (FIRST_DATE + timedelta(days=DAYS - 1)).isoformat(), "middle_third": [since, until]}
    (tmp / "archive.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    log(f"synth: wrote {folder}: {len(chosen):,} articles, about {meta['estimated_sentences']:,} sentences "
        f"in {len(files)} files ({time.perf_counter() - t0:.0f} s)")
    return Archive(folder, folder / "corpus", folder / "extra" / "add-1k.jsonl", meta)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", help="sentence counts, comma-separated: 100k,300k,1M")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--file-mb", type=float, default=20.0, help="size of each corpus file (MB)")
    args = parser.parse_args(argv)
    if (need := missing_data(args.data)) is not None:
        print(f"skipped: {need} not found (see ../shared/data/SOURCES.md)")
        return 0
    if args.cache.resolve().is_relative_to(ROOT):
        raise SystemExit(f"--cache {args.cache} is inside the repository; the data may not be copied there")
    for size in args.sizes.split(","):
        a = ensure_archive(parse_size(size), args.data, args.cache, args.seed, args.file_mb)
        print(f"{a.folder}: {a.meta['articles']:,} articles, about {a.meta['estimated_sentences']:,} sentences, "
              f"{a.meta['replicas']} replica(s), {len(a.meta['files'])} file(s); extra: {a.extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
