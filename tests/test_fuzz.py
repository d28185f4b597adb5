"""Random input for the loader and the splitter: nothing raises, every offset is exact."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from qa import sentences  # noqa: E402
from qa.articles import load_corpus  # noqa: E402
from qa.sentences import load_splitter  # noqa: E402

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Text that looks like news often enough to reach the splitter's rules: words, abbreviations,
# quotes, ellipses, numbers, line and paragraph breaks, and any other character now and then.
PIECES = st.sampled_from(["The", "U.S.", "Dr.", "said", "“Yes.”", '"', "'", "...", "…", "3.5%", "Jan.", "no.",
                          "?", "!", ".", ",", " ", "  ", "\n", "\n\n", "\r\n", "\t", "a", "Z", "é", "ß", "٣"])
NEWSISH = st.lists(st.one_of(PIECES, st.text(max_size=3)), max_size=80).map("".join)


def check_spans(text: str) -> None:
    got = load_splitter().split("x", text)
    for s in got:
        assert text[s.start:s.end] == s.text and s.text.strip() == s.text and s.text
        assert not sentences.PARAGRAPH_BREAK.search(s.text)  # never across a blank line
    assert all(a.end <= b.start for a, b in zip(got, got[1:]))
    assert [s.index for s in got] == list(range(len(got)))
    assert [s.paragraph for s in got] == sorted(s.paragraph for s in got)


@FAST
@given(NEWSISH)
def test_splitter_offsets_are_exact(text):
    check_spans(text)


@FAST
@given(st.text(max_size=300))
def test_splitter_takes_any_text(text):
    check_spans(text)


@settings(max_examples=20, deadline=None)
@given(NEWSISH.filter(str.strip), st.integers(min_value=50, max_value=400))
def test_long_paragraphs_are_cut_into_exact_pieces(text, size):
    long = (text + " ") * (sentences.MAX_PIECE // (len(text) + 1) + 2)  # over MAX_PIECE: cut by the splitter
    got = sentences.pieces(long, 0, len(long), size)
    assert got[0][0] == 0 and got[-1][1] == len(long) and all(0 < e - s <= size for s, e in got)
    assert all(a[1] == b[0] for a, b in zip(got, got[1:]))
    check_spans(long)


def _load(name: str, data: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / name).write_bytes(data)
        return load_corpus(tmp)


def check_loaded(result) -> None:
    ids = [a.id for a in result.articles]
    assert len(ids) == len(set(ids)) and all(a.text and a.text == a.text.strip() for a in result.articles)
    assert all(p.path and p.message for p in result.problems)


@FAST
@given(st.sampled_from(["a.txt", "a.md", "a.jsonl", "a.csv"]), st.binary(max_size=400))
def test_loader_takes_any_bytes(name, data):
    check_loaded(_load(name, data))


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=3), max_leaves=8)
RECORDS = st.dictionaries(st.sampled_from(["id", "title", "source", "published", "date", "url", "text", "body"]),
                          JSON_VALUES | NEWSISH, max_size=6)


@FAST
@given(st.lists(RECORDS | JSON_VALUES, max_size=6))
def test_loader_takes_any_json_lines(records):
    data = "\n".join(json.dumps(r) for r in records).encode()
    check_loaded(_load("feed.jsonl", data))


@FAST
@given(st.lists(st.lists(NEWSISH, min_size=1, max_size=4), min_size=1, max_size=5))
def test_loader_takes_any_csv(rows):
    import csv
    import io
    out = io.StringIO()
    csv.writer(out).writerows([["id", "text", "title"][:len(rows[0])], *rows])
    check_loaded(_load("feed.csv", out.getvalue().encode()))
