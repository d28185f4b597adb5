"""Tests for qa.articles: every format, every kind of bad file, ids, duplicates and dates."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from qa import articles
from qa.articles import Problem, load_corpus, normalise_date, parse_text_article

# The seed corpus's shape: the date header shares its line with the first sentence, after a space.
SEED = (" date 2020-05-11 Amnesty International on Monday accused the Syrian regime and its ally Russia of "
        "“war crimes” after documenting 18 attacks.\n\nThis region, where Idlib province is located, has enjoyed "
        "a precarious ceasefire.\n\nThe operation was relaunched in December.")
PLAIN = ("Amnesty International (Amnesty) has accused the Syrian regime of targeting medical facilities, "
         "warning it amounts to \"war crimes\".\n\nIn a report published today, it documented 18 attacks.")


def write(root: Path, rel: str, content: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def messages(result, path: str) -> list[str]:
    return [p.message for p in result.problems if p.path == path]


def test_seed_format_date_header_on_the_first_line(tmp_path):
    write(tmp_path, "000_24bd21a41d8b3e79.txt", SEED + "\n")
    write(tmp_path, "002_3d1258f428892b47.txt", PLAIN + "\n")
    result = load_corpus(tmp_path)
    assert result.problems == () and result.duplicates == ()
    seed, plain = result.articles
    assert (seed.id, seed.origin, seed.published, seed.title) == ("000_24bd21a41d8b3e79",
                                                                  "000_24bd21a41d8b3e79.txt", "2020-05-11", "")
    assert seed.text == SEED.removeprefix(" date 2020-05-11 ")
    assert (plain.id, plain.published, plain.text) == ("002_3d1258f428892b47", "", PLAIN)


def test_header_lines_in_any_order_and_body_kept_verbatim(tmp_path):
    body = "First line  with  two spaces.\n    Indented line.\n\n\nAfter three newlines."
    raw = "Source: Reuters\r\nURL: https://example.com/a\r\n\r\ntitle:  Ceasefire   holds\r\nDate: May 11, 2020\r\n\r\n"
    write(tmp_path, "a.txt", raw + body.replace("\n", "\r\n") + "\r\n\r\n")
    (article,) = load_corpus(tmp_path).articles
    assert (article.title, article.source, article.url) == ("Ceasefire holds", "Reuters", "https://example.com/a")
    assert article.published == "2020-05-11"
    assert article.text == body


def test_md_in_subfolders_gets_path_id_and_hidden_files_are_skipped(tmp_path):
    write(tmp_path, "sub/dir/x.md", "title: X\n\n# Heading\n\nSome *markdown* body.")
    write(tmp_path, ".hidden.txt", "secret")
    write(tmp_path, ".git/notes.txt", "secret")
    result = load_corpus(tmp_path)
    assert [(a.id, a.origin, a.title) for a in result.articles] == [("sub/dir/x", "sub/dir/x.md", "X")]
    assert result.articles[0].text == "# Heading\n\nSome *markdown* body."
    assert result.problems == ()


def test_single_file_and_folder_load_the_same_article(tmp_path):
    path = write(tmp_path, "story.txt", PLAIN)
    (from_file,), (from_folder,) = load_corpus(path).articles, load_corpus(str(tmp_path)).articles
    assert from_file == from_folder
    assert (from_file.id, from_file.origin) == ("story", "story.txt")


def test_jsonl_ids_given_or_derived_from_text_and_stable_under_reordering(tmp_path):
    rows = [{"id": 7, "title": "Given", "source": "AFP", "published": "2020/05/11", "url": "u", "text": "Seven."},
            {"text": "No id here."},
            {"title": "Also none", "text": "  Another body.\n"}]
    write(tmp_path, "a/news.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    first = load_corpus(tmp_path)
    write(tmp_path, "a/news.jsonl", "\n".join(json.dumps(r) for r in reversed(rows)))
    second = load_corpus(tmp_path)
    assert first.problems == second.problems == ()
    assert sorted(first.articles, key=lambda a: a.id) == sorted(second.articles, key=lambda a: a.id)
    assert load_corpus(tmp_path) == second
    by_id = {a.id: a for a in first.articles}
    derived = "a/news-" + hashlib.sha1(b"No id here.").hexdigest()[:12]
    assert set(by_id) == {"7", derived, "a/news-" + hashlib.sha1(b"Another body.").hexdigest()[:12]}
    assert (by_id["7"].title, by_id["7"].source, by_id["7"].published) == ("Given", "AFP", "2020-05-11")
    assert by_id[derived].origin == "a/news.jsonl"


def test_jsonl_bad_lines_are_reported_and_the_rest_load(tmp_path):
    lines = ['{"text": "Good one."}', '{"text": "unterminated', '', '{"title": "no text"}', '{"text": 5}',
             '["a", "list"]', '{"text": "Good two.", "title": ["not", "a", "string"]}', '{"text": "Good three."}']
    write(tmp_path, "news.jsonl", "\n".join(lines))
    result = load_corpus(tmp_path)
    assert [a.text for a in result.articles] == ["Good one.", "Good three."]
    assert [p.path for p in result.problems] == ["news.jsonl:2", "news.jsonl:4", "news.jsonl:5", "news.jsonl:6",
                                                 "news.jsonl:7"]
    assert "invalid JSON" in result.problems[0].message
    assert "'text'" in result.problems[1].message and "'title'" in result.problems[4].message
    assert all(p.message.startswith("skipped") for p in result.problems)


def test_csv_with_aliases_extra_columns_and_multiline_rows(tmp_path):
    write(tmp_path, "feed.csv", 'Title,date,content,extra\n'
                                'One,11 May 2020,"Body one,\nwith a second line.",x\n'
                                'Two,2020-05-12,,y\n'
                                'Three,,Body three.,z\n')
    result = load_corpus(tmp_path)
    assert [(a.title, a.published, a.text) for a in result.articles] == [
        ("One", "2020-05-11", "Body one,\nwith a second line."), ("Three", "", "Body three.")]
    assert result.problems == (Problem("feed.csv:4", "skipped: missing or empty 'text'"),)
    assert result.articles[0].id == "feed-" + hashlib.sha1(b"Body one,\nwith a second line.").hexdigest()[:12]


def test_csv_without_text_column_is_skipped(tmp_path):
    write(tmp_path, "feed.csv", "title,summary\nOne,Short\n")
    result = load_corpus(tmp_path)
    assert result.articles == ()
    assert "no text column" in messages(result, "feed.csv")[0]


def test_invalid_utf8_is_decoded_as_cp1252_with_a_problem(tmp_path):
    write(tmp_path, "old.txt", "Caf\u00e9 owners said \u201cenough\u201d.".encode("cp1252"))
    result = load_corpus(tmp_path)
    assert result.articles[0].text == "Caf\u00e9 owners said \u201cenough\u201d."
    assert any("decoded as cp1252" in m for m in messages(result, "old.txt"))


def test_utf8_bom_is_stripped_silently(tmp_path):
    write(tmp_path, "bom.txt", b"\xef\xbb\xbf" + "date 2020-05-11 Body text.".encode())
    result = load_corpus(tmp_path)
    assert (result.articles[0].published, result.articles[0].text) == ("2020-05-11", "Body text.")
    assert result.problems == ()


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", bytes(range(1, 32)) * 20])
def test_binary_files_are_skipped(tmp_path, content):
    write(tmp_path, "image.txt", content)
    write(tmp_path, "ok.txt", PLAIN)
    result = load_corpus(tmp_path)
    assert [a.id for a in result.articles] == ["ok"]
    assert "binary" in messages(result, "image.txt")[0]


@pytest.mark.parametrize("name, content", [("empty.txt", ""), ("blank.md", " \n\t\n"), ("blank.jsonl", "\n\n"),
                                           ("headers.txt", "title: Only a title\n")])
def test_empty_files_are_skipped(tmp_path, name, content):
    write(tmp_path, name, content)
    result = load_corpus(tmp_path)
    assert result.articles == ()
    assert len(messages(result, name)) == 1 and messages(result, name)[0].startswith("skipped")


def test_unsupported_suffixes(tmp_path):
    write(tmp_path, "photo.png", b"\x89PNG")
    write(tmp_path, "report.pdf", b"%PDF-1.4")
    write(tmp_path, "a.txt", PLAIN)
    result = load_corpus(tmp_path)
    assert [p.path for p in result.problems] == ["report.pdf"]  # article-like is reported, the photo is not
    assert len(result.articles) == 1
    direct = load_corpus(tmp_path / "photo.png")
    assert direct.articles == () and "unsupported suffix" in direct.problems[0].message
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_corpus(tmp_path / "missing")


def test_unreadable_and_oversized_files_are_skipped(tmp_path, monkeypatch):
    write(tmp_path, "big.txt", "x" * 100)
    write(tmp_path, "small.txt", "Short.")
    monkeypatch.setattr(articles, "MAX_ARTICLE_BYTES", 50)
    result = load_corpus(tmp_path)
    assert [a.id for a in result.articles] == ["small"] and "limit" in messages(result, "big.txt")[0]

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))
    monkeypatch.setattr(Path, "open", refuse)
    result = load_corpus(tmp_path)
    assert result.articles == ()
    assert messages(result, "small.txt") == ["skipped: cannot read file (Permission denied)"]


def test_duplicate_text_and_duplicate_ids(tmp_path):
    write(tmp_path, "a.txt", "Same   words\nhere.")
    write(tmp_path, "b.txt", "title: Copy\n\nSame words here.")
    write(tmp_path, "c.jsonl", json.dumps({"id": "a", "text": "Different words."}))
    result = load_corpus(tmp_path)
    assert [a.id for a in result.articles] == ["a"]
    assert result.duplicates == (("b", "a"),)
    assert "already used by a.txt" in messages(result, "c.jsonl:1")[0]


def test_html_markup_is_kept_literally_with_a_warning(tmp_path):
    write(tmp_path, "a.jsonl", json.dumps({"id": "h", "text": "<p>Officials <b>said</b> 3 < 4.</p>"}))
    write(tmp_path, "b.txt", "Prices rose 3 < 4 percent, and x > y.")
    result = load_corpus(tmp_path)
    assert result.articles[0].text == "<p>Officials <b>said</b> 3 < 4.</p>"
    assert result.problems == (Problem("a.jsonl:1", "contains HTML markup; indexed as literal text"),)


@pytest.mark.parametrize("raw, expected", [
    ("2020-05-11", "2020-05-11"), ("2020/05/11", "2020-05-11"), ("11 May 2020", "2020-05-11"),
    ("May 11, 2020", "2020-05-11"), ("Monday, 11 May 2020", "2020-05-11"),
    ("2020-05-11T10:30:00", "2020-05-11T10:30:00"), ("2020-05-11T10:30:00Z", "2020-05-11T10:30:00+00:00"),
    ("Mon, 11 May 2020 10:30:00 +0000", "2020-05-11T10:30:00+00:00"),
    ("", ""), ("05/11/2020", None), ("2020-02-30", None), ("last spring", None)])
def test_date_normalisation(raw, expected):
    assert normalise_date(raw) == expected


def test_unrecognised_date_is_kept_with_a_warning(tmp_path):
    write(tmp_path, "a.txt", "published: last spring\n\nBody.")
    result = load_corpus(tmp_path)
    assert result.articles[0].published == "last spring"
    assert "not recognised" in messages(result, "a.txt")[0]


def test_parse_text_article_and_content_hash():
    article = parse_text_article("title: A\n\nBody.", "upload-1")
    assert (article.id, article.origin, article.title, article.text) == ("upload-1", "", "A", "Body.")
    assert parse_text_article("title: A\n\nBody.", "other").content_hash == article.content_hash
    assert parse_text_article("title: B\n\nBody.", "upload-1").content_hash != article.content_hash
    with pytest.raises(ValueError, match="no body text"):
        parse_text_article("title: A\n", "upload-1")


# --- files that used to stop the whole corpus, and symbolic links ---------------------------------------

def test_json_a_parser_cannot_read_is_skipped_with_a_reason(tmp_path):
    write(tmp_path, "feed.jsonl", '{"text": "Numbers.", "n": ' + "9" * 5000 + '}\n' + "[" * 200_000 + "\n"
          + '{"text": "The ferry to Hel resumed on Monday."}\n')
    result = load_corpus(tmp_path)
    assert [a.text for a in result.articles] == ["The ferry to Hel resumed on Monday."]
    assert "4300 digits" in messages(result, "feed.jsonl:1")[0] and "as strings" in messages(result, "feed.jsonl:1")[0]
    assert "nested too deeply" in messages(result, "feed.jsonl:2")[0]


def test_an_unforeseen_error_stays_with_its_file(tmp_path, monkeypatch):
    write(tmp_path, "a.txt", PLAIN)
    write(tmp_path, "b.csv", "text\nThe ferry to Hel resumed on Monday.\n")

    def broken(*args):
        raise MemoryError("out of memory")
    monkeypatch.setattr(articles, "_load_csv", broken)
    result = load_corpus(tmp_path)
    assert [a.id for a in result.articles] == ["a"]
    assert messages(result, "b.csv") == ["skipped: could not be read (MemoryError: out of memory)"]


def test_symbolic_links_out_of_the_corpus_are_not_followed(tmp_path):
    corpus, outside = tmp_path / "corpus", tmp_path / "outside"
    write(outside, "secret.txt", "The password is swordfish.")
    write(corpus, "a.txt", PLAIN)
    (corpus / "secret.txt").symlink_to(outside / "secret.txt")
    (corpus / "elsewhere").symlink_to(outside, target_is_directory=True)
    (corpus / "same.txt").symlink_to(corpus / "a.txt")  # inside: followed, and found to repeat a.txt
    result = load_corpus(corpus)
    assert [a.id for a in result.articles] == ["a"] and result.duplicates == (("same", "a"),)
    assert "outside the corpus folder" in messages(result, "secret.txt")[0]
    assert "outside the corpus folder" in messages(result, "elsewhere")[0]
    assert all("swordfish" not in a.text for a in result.articles)


def test_symbolic_link_loops_and_dangling_links_are_reported(tmp_path):
    write(tmp_path, "a.txt", PLAIN)
    (tmp_path / "loop.txt").symlink_to(tmp_path / "loop.txt")
    (tmp_path / "x.txt").symlink_to(tmp_path / "y.txt")
    (tmp_path / "y.txt").symlink_to(tmp_path / "x.txt")
    (tmp_path / "gone.md").symlink_to(tmp_path / "nowhere.md")
    result = load_corpus(tmp_path)
    assert [a.id for a in result.articles] == ["a"]
    for name in ("loop.txt", "x.txt", "y.txt"):
        assert "symbolic link loop" in messages(result, name)[0]
    assert "symbolic link to nothing" in messages(result, "gone.md")[0]


# --- streaming: files bigger than one article, read one line or row at a time ---------------------------

def test_jsonl_bigger_than_the_article_limit_loads_and_a_long_line_is_skipped_at_its_line(tmp_path, monkeypatch):
    monkeypatch.setattr(articles, "MAX_ARTICLE_BYTES", 10_000)
    lines = [json.dumps({"id": f"n{i}", "text": f"Story number {i} about the ferry to Hel."}) for i in range(4000)]
    lines[1234] = json.dumps({"id": "long", "text": "word " * 5000})  # 25 kB: one article over the limit
    path = write(tmp_path, "feed.jsonl", "\n".join(lines) + "\n")
    assert path.stat().st_size > 20 * articles.MAX_ARTICLE_BYTES
    result = load_corpus(tmp_path)
    assert [a.id for a in result.articles] == [f"n{i}" for i in range(4000) if i != 1234]
    (problem,) = result.problems
    assert problem.path == "feed.jsonl:1235" and "over the" in problem.message and "per article" in problem.message


def test_csv_bigger_than_the_article_limit_streams_and_a_long_row_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(articles, "MAX_ARTICLE_BYTES", 10_000)
    rows = [f'r{i},"Story {i}, with a comma\nand a second line."\n' for i in range(3000)]
    rows[100] = 'long,"' + "many\nlines\n" * 2000 + '"\n'  # a quoted field over the limit across 4000 lines
    write(tmp_path, "feed.csv", "id,text\n" + "".join(rows))
    result = load_corpus(tmp_path)
    assert [a.id for a in result.articles] == [f"r{i}" for i in range(3000) if i != 100]
    assert result.articles[-1].text == "Story 2999, with a comma\nand a second line."
    (problem,) = result.problems
    assert problem.path == "feed.csv:202" and "row of" in problem.message and "per article" in problem.message
    assert load_corpus(tmp_path).articles[150].id == "r151"


def test_csv_records_split_where_the_csv_module_splits_them(tmp_path):
    import csv
    import io
    import random
    rng = random.Random(11)
    for n in range(300):
        text = "".join(rng.choice(['"', '"', ",", "a", "b ", "\n", "\r\n", "\r", '""']) for _ in range(rng.randrange(60)))
        path = write(tmp_path, f"t{n}.csv", text)
        file = articles.CorpusFile(path.name, path, path.stat().st_size, 0)
        records = articles._csv_records(file, lambda where, message: None, 10_000)
        got = [row for _, record in records for row in csv.reader((record,))]
        assert got == list(csv.reader(io.StringIO(text, newline=""))), repr(text)


def test_reader_streams_lazily_and_lists_files_with_their_digest(tmp_path):
    write(tmp_path, "a.txt", PLAIN)
    lines = ['{"id": "first", "text": "The ferry to Hel resumed on Monday."}'] + ["not json"] * 3
    path = write(tmp_path, "b.jsonl", "\n".join(lines))
    reader = articles.CorpusReader(tmp_path)
    assert [(f.rel, f.size) for f in reader.files] == [("a.txt", len(PLAIN)), ("b.jsonl", path.stat().st_size)]
    assert reader.files[1].sha1() == hashlib.sha1(path.read_bytes()).hexdigest()
    stream = reader.articles(reader.files[1:])
    assert next(stream).id == "first" and reader.problems == []  # the broken lines are not read yet
    assert list(stream) == [] and [p.path for p in reader.problems] == ["b.jsonl:2", "b.jsonl:3", "b.jsonl:4"]
    assert [a.id for a in reader.articles(reader.files[:1])] == ["a"]
    assert list(reader.articles()) == [] and reader.duplicates == [("a", "a"), ("first", "first")]


def test_a_jsonl_line_that_is_not_utf8_falls_back_alone_with_one_note(tmp_path):
    good = json.dumps({"id": "u", "text": "Zürich said “yes”."}, ensure_ascii=False).encode()
    old = json.dumps({"id": "c", "text": "Café owners said “enough”."}, ensure_ascii=False).encode("cp1252")
    write(tmp_path, "feed.jsonl", b"\n".join([good, old, old.replace(b'"c"', b'"d"')]))
    result = load_corpus(tmp_path)
    assert [a.text for a in result.articles] == ["Zürich said “yes”.", "Café owners said “enough”."]
    assert messages(result, "feed.jsonl") == ["not valid UTF-8; decoded as cp1252"]
    assert result.duplicates == (("d", "c"),)


@pytest.mark.parametrize("name, content", [
    ("feed.jsonl", '{"text": "The ferry to Hel resumed."}\r\n{"text": "Flooding closed\\nthe road."}'),
    ("feed.csv", "text,title\r\nThe ferry to Hel resumed.,A\r\n\r\n\"Flooding closed\r\nthe road.\",B\r\n")])
def test_utf16_and_crlf_streams_read_like_utf8(tmp_path, name, content):
    write(tmp_path, "a/" + name, content)
    write(tmp_path, "b/" + name, content.encode("utf-16"))
    utf8, utf16 = load_corpus(tmp_path / "a"), load_corpus(tmp_path / "b")
    assert [a.text for a in utf8.articles] == ["The ferry to Hel resumed.", "Flooding closed\nthe road."]
    assert (utf16.articles, utf16.problems) == (utf8.articles, utf8.problems) and utf8.problems == ()


def test_an_article_file_over_the_limit_is_skipped_per_article(tmp_path, monkeypatch):
    write(tmp_path, "big.md", "x" * 2000)
    write(tmp_path, "feed.jsonl", "\n".join(json.dumps({"text": f"Story {i}."}) for i in range(200)))
    monkeypatch.setattr(articles, "MAX_ARTICLE_BYTES", 1000)
    result = load_corpus(tmp_path)
    assert len(result.articles) == 200 and "limit per article" in messages(result, "big.md")[0]


def test_a_markdown_heading_is_the_title_of_a_md_file(tmp_path):
    write(tmp_path, "storm.md", "# Storm in Oslo\n*By staff*\n\nThe storm hit Oslo on Monday.\n")
    write(tmp_path, "titled.md", "title: Given\n\n# A heading in the body\nText.\n")
    write(tmp_path, "plain.txt", "# Not markdown here\nText.\n")
    write(tmp_path, "only.md", "# Only a heading\n")
    got = {a.id: (a.title, a.text) for a in load_corpus(tmp_path).articles}
    assert got["storm"] == ("Storm in Oslo", "*By staff*\n\nThe storm hit Oslo on Monday.")
    assert got["titled"] == ("Given", "# A heading in the body\nText.")
    assert got["plain"] == ("", "# Not markdown here\nText.") and got["only"] == ("", "# Only a heading")
