"""Adding articles to a served archive: names stay in the corpus folder, bad files change nothing."""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from qa.answer import answer
from qa import Retriever
from qa.chat import refresh
from qa.index import build_index
from qa.sentences import load_splitter
from qa.uploads import LiveIndex, safe_filename

FLOOD = "title: Flood\nsource: River News\npublished: 2021-03-02\n\nThe river Oder flooded Frankfurt on Tuesday."


@pytest.mark.parametrize("name, safe", [
    ("../../x.txt", "x.txt"), ("..\\..\\evil.md", "evil.md"), ("/etc/passwd.csv", "passwd.csv"),
    (".hidden.txt", "hidden.txt"), ("Ünïcode news (1).TXT", "Unicode-news-1.txt"), ("...txt", "upload.txt"),
    ("a b;rm -rf.jsonl", "a-b-rm--rf.jsonl"), ("日本.txt", "upload.txt"), ("Новости.JSONL", "upload.jsonl"),
])
def test_safe_filename(name, safe):
    assert safe_filename(name) == safe


@pytest.mark.parametrize("name", ["x.pdf", "x", "x.txt.exe", "../x.html"])
def test_unsupported_suffix_is_refused(name):
    with pytest.raises(ValueError, match="not an article format"):
        safe_filename(name)


@pytest.fixture
def live(tmp_path, corpus_dir):
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    shutil.copytree(corpus_dir, corpus)
    splitter = load_splitter()
    build_index(corpus, index, splitter, None, mode_reason="keyword-only: test", progress=False)
    return LiveIndex(Retriever.load(index), index, corpus, splitter)


def upload(tmp_path: Path, name: str, data: str | bytes) -> tuple[str, Path]:
    path = tmp_path / "uploads" / f"u{len(list(tmp_path.glob('uploads/*')))}"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return name, path


def archive(live: LiveIndex) -> dict[str, str]:
    r = live.retriever
    return {i: r.article(i).text for i in r.article_ids}


def test_upload_is_answerable_at_once(live, tmp_path):
    before = archive(live)
    (added,) = live.add_files([upload(tmp_path, "../../flood.txt", FLOOD)])
    assert added.accepted and added.saved_as == "flood.txt" and added.articles == ("flood",)
    assert (live.corpus_dir / "flood.txt").exists() and not (tmp_path / "flood.txt").exists()
    ans = answer(live.retriever, "Which town did the river Oder flood?")
    assert not ans.abstained and ans.citations[0].passage.source == "River News"
    assert archive(live) == {**before, "flood": "The river Oder flooded Frankfurt on Tuesday."}
    assert "River News" in live.retriever.stats().sources
    header, _, chat = refresh(live)  # what every open page shows once it sees the new index
    assert "<b>3</b> articles" in header and "Ask about the 3 articles" in chat["placeholder"]


@pytest.mark.parametrize("name, data, message", [
    ("bad.txt", b"\x00\x01\x02 binary", "binary"),
    ("empty.md", b"", "empty"),
    ("headers-only.txt", "title: nothing else\n", "no body text"),
    ("nocol.csv", "title,body2\nx,y\n", "no text column"),
    ("broken.jsonl", "not json\n[1, 2]\n", "invalid JSON"),
    ("notes.pdf", "%PDF-1.4", "not an article format"),
])
def test_bad_file_is_rejected_and_nothing_is_lost(live, tmp_path, name, data, message):
    before, files = archive(live), sorted(p.name for p in live.corpus_dir.iterdir())
    (added,) = live.add_files([upload(tmp_path, name, data)])
    assert not added.accepted and any(message in m for m in added.messages)
    assert archive(live) == before and sorted(p.name for p in live.corpus_dir.iterdir()) == files
    assert not answer(live.retriever, "Which school was hit with cluster munitions?").abstained


def test_repeat_of_an_indexed_article_is_rejected(live, tmp_path):
    text = (live.corpus_dir / "000_24bd21a41d8b3e79.txt").read_text(encoding="utf-8")
    (added,) = live.add_files([upload(tmp_path, "000_copy.txt", "\n" + text + "\n")])
    assert not added.accepted and "already in the archive" in added.messages[0]
    assert not (live.corpus_dir / "000_copy.txt").exists()


def test_same_name_does_not_overwrite(live, tmp_path):
    original = (live.corpus_dir / "000_24bd21a41d8b3e79.txt").read_bytes()
    (added,) = live.add_files([upload(tmp_path, "000_24bd21a41d8b3e79.txt", FLOOD)])
    assert added.saved_as == "000_24bd21a41d8b3e79-2.txt"
    assert (live.corpus_dir / "000_24bd21a41d8b3e79.txt").read_bytes() == original
    assert len(archive(live)) == 3


def test_reused_row_id_is_rejected(live, tmp_path):
    row = '{"id": "000_24bd21a41d8b3e79", "text": "Something else entirely happened in Gdansk."}\n'
    (added,) = live.add_files([upload(tmp_path, "feed.jsonl", row)])
    assert not added.accepted and "already used" in added.messages[0]


def test_good_and_bad_files_together(live, tmp_path):
    csv = "id,title,source,published,text\nb1,Bridge,Local News,2021-04-01,The Oder bridge reopened on Thursday.\n"
    jsonl = '{"text": "Dock workers in Gdansk went on strike over pay."}\nnot json\n'
    results = live.add_files([upload(tmp_path, "news.csv", csv), upload(tmp_path, "bad.txt", b"\x00"),
                              upload(tmp_path, "feed.jsonl", jsonl)])
    assert [a.accepted for a in results] == [True, False, True]
    assert any("invalid JSON" in m for m in results[2].messages)  # the good row is kept, the bad one named
    assert not answer(live.retriever, "Where did dock workers strike?").abstained
    assert live.retriever.stats().articles == 4


def test_failed_indexing_keeps_the_old_index_and_removes_the_file(live, tmp_path, monkeypatch):
    import qa.uploads
    old = live.retriever

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(qa.uploads, "build_index", broken)
    (added,) = live.add_files([upload(tmp_path, "flood.txt", FLOOD)])
    assert not added.accepted and "disk full" in added.messages[0]
    assert live.retriever is old and not (live.corpus_dir / "flood.txt").exists()


def test_concurrent_uploads_are_serialised(live, tmp_path):
    files = [upload(tmp_path, f"n{i}.txt", f"title: N{i}\n\nThe harbour of town {i} froze in winter {2000 + i}.")
             for i in range(4)]
    threads = [threading.Thread(target=live.add_files, args=([f],)) for f in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert live.retriever.stats().articles == 6


def test_uploads_off_without_a_corpus_folder(live, tmp_path):
    off = LiveIndex(live.retriever, live.index_dir, None, None)
    assert off.can_add()
    (added,) = off.add_files([upload(tmp_path, "flood.txt", FLOOD)])
    assert not added.accepted and "off" in added.messages[0]


# --- staged uploads, one writer at a time, following the live index ------------------------------------

def test_upload_is_staged_and_moved_in_only_after_publishing(live, tmp_path, monkeypatch):
    """A crash between publishing and moving the file in: a restart leaves the article in neither place."""
    import qa.uploads
    from qa.index import build_index

    def crash(src, dst):
        raise KeyboardInterrupt("killed after publishing")
    monkeypatch.setattr(qa.uploads.os, "rename", crash)
    with pytest.raises(KeyboardInterrupt):
        live.add_files([upload(tmp_path, "flood.txt", FLOOD)])
    assert not (live.corpus_dir / "flood.txt").exists() and (live.corpus_dir / ".staging" / "flood.txt").exists()
    monkeypatch.undo()
    # What `qa serve` does on start: index the corpus, then drop staged uploads.
    build_index(live.corpus_dir, live.index_dir, live.splitter, None, progress=False)
    restarted = LiveIndex(Retriever.load(live.index_dir), live.index_dir, live.corpus_dir, live.splitter)
    restarted.remove_staged()
    assert not (live.corpus_dir / ".staging").exists() and "flood" not in archive(restarted)
    (added,) = restarted.add_files([upload(tmp_path, "flood.txt", FLOOD)])  # the user tries again
    assert added.accepted and (live.corpus_dir / "flood.txt").exists() and "flood" in archive(restarted)


def test_an_upload_waits_for_a_build_and_says_so_when_it_takes_too_long(live, tmp_path):
    from qa.index import writer_lock
    live.upload_wait = 0.3
    with writer_lock(live.index_dir):
        (added,) = live.add_files([upload(tmp_path, "flood.txt", FLOOD)])
    assert not added.accepted and "another build" in added.messages[0] and "nothing was changed" in added.messages[0]
    assert not (live.corpus_dir / "flood.txt").exists() and "flood" not in archive(live)


def test_upload_racing_a_cli_build_keeps_both(live, tmp_path):
    from qa.index import build_index
    other = tmp_path / "more"
    other.mkdir()
    (other / "x.txt").write_text("Flooding closed the coastal road near Latakia on Sunday.")
    builder = threading.Thread(target=build_index, args=(other, live.index_dir, live.splitter, None),
                               kwargs={"progress": False})
    builder.start()
    (added,) = live.add_files([upload(tmp_path, "flood.txt", FLOOD)])
    builder.join()
    live.check_every = 0
    assert added.accepted and {"x", "flood"} <= set(archive(live)) and live.retriever.stats().articles == 4


def test_the_chat_follows_a_generation_published_elsewhere(live, tmp_path):
    from qa.chat import refresh, served
    from qa.index import build_index
    live.check_every = 0
    r, shown = live.retriever, served(live)
    assert served(live) == shown and "<b>2</b> articles" in refresh(live)[0]  # nothing new: the page stays
    other = tmp_path / "more"
    other.mkdir()
    (other / "x.txt").write_text("source: Coast Radio\n\nFlooding closed the coastal road near Latakia on Sunday.")
    build_index(other, live.index_dir, live.splitter, None, progress=False)  # e.g. `qa index more/`
    assert served(live) != shown and live.retriever is not r and live.retriever.stats().articles == 3
    header, outlets, _ = refresh(live)
    assert "<b>3</b> articles" in header and "Coast Radio" in outlets["choices"][0]
    assert not answer(live.retriever, "Which road did flooding close?").abstained


@pytest.mark.parametrize("name, data", [
    ("bigint.jsonl", '{"text": "Numbers.", "n": ' + "9" * 5000 + "}\n"),
    ("nested.jsonl", "[" * 200_000 + "\n"),
])
def test_the_chat_names_a_bad_file_as_qa_index_does(live, tmp_path, name, data):
    from qa.articles import load_corpus
    folder = tmp_path / "cli"
    folder.mkdir()
    (folder / name).write_text(data)
    (problem,) = load_corpus(folder).problems  # what `qa index` prints after "problem: "
    (added,) = live.add_files([upload(tmp_path, name, data)])
    assert not added.accepted and added.messages == (f"{problem.path}: {problem.message}",)
