"""Tests for qa.sentences: offsets, ids, paragraphs and split accuracy on a hand-labelled sample."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import nltk
import pytest
from nltk.tokenize import punkt

from qa import sentences
from qa.sentences import PARAGRAPH_BREAK, Sentence, Splitter, load_splitter

SAMPLE = json.loads((Path(__file__).parent / "data" / "split_sample.json").read_text(encoding="utf-8"))

# What the bundled splitter produced on the sample when its name was recorded. A mismatch
# means splitting changed while the name did not: bump RULES_VERSION or PARAMETERS_VERSION
# in qa/sentences.py (indexes record the name) and record the new fingerprint here; after
# an edit of the sample or of TRICKY, record it for the same name.
FINGERPRINTS = {
    "punkt (bundled parameters v1; rules v1, nltk 3.10.4)": "55bdd197b0c05125dd49420ed35068ac768c09528462feaeef12c3baf75e4d32",
}

TRICKY = (
    "Oil prices hit two-year high\n\n"
    "Brent crude rose 3.5% to $81.20 in the U.S. on Jan. 5, said Dr. J.K. Osei of Acme Corp. "
    "“Prices will rise.” Will they?\nAnalysts said... maybe. The war has killed 380,000 people!\n"
    " \t\n\r\n"
    "She explained that \"the evidence shows law, \"asserting that they\" amount to war crimes. \"\n\n\n"
    "no terminal punctuation here"
)


@pytest.fixture
def fresh_loader():
    """load_splitter is cached per process; these tests need it to look for data again."""
    load_splitter.cache_clear()
    yield load_splitter
    load_splitter.cache_clear()


@pytest.fixture(scope="module")
def bundled() -> Splitter:
    return load_splitter(prefer_nltk_data=False)


def assert_well_formed(found: list[Sentence], text: str, article_id: str) -> None:
    assert [s.index for s in found] == list(range(len(found)))
    assert [s.id for s in found] == [f"{article_id}:{i}" for i in range(len(found))]
    assert all(s.article_id == article_id for s in found)
    for before, after in zip(found, found[1:]):
        assert before.end <= after.start
        assert after.paragraph - before.paragraph in (0, 1)
    for s in found:
        assert text[s.start : s.end] == s.text
        assert s.text and s.text == s.text.strip()
        assert not PARAGRAPH_BREAK.search(s.text), f"sentence crosses a blank line: {s.text!r}"


def boundaries(text: str, pieces: list[str]) -> set[int]:
    """Character offsets where one sentence ends and another follows."""
    ends, pos = [], 0
    for piece in pieces:
        pos = text.index(piece, pos) + len(piece)
        ends.append(pos)
    return set(ends[:-1])


def test_bundled_splitter_accuracy_on_hand_labelled_sample(bundled: Splitter) -> None:
    passages = SAMPLE["passages"]
    right, true_pos, n_found, n_expected, wrong = 0, 0, 0, 0, []
    for passage in passages:
        text, expected = passage["text"], passage["sentences"]
        got = [s.text for s in bundled.split("sample", text)]
        right += got == expected
        if got != expected:
            wrong.append(f"{passage['case']}: {got}")
        found, truth = boundaries(text, got), boundaries(text, expected)
        true_pos, n_found, n_expected = true_pos + len(found & truth), n_found + len(found), n_expected + len(truth)
    precision, recall = true_pos / n_found, true_pos / n_expected
    f1 = 2 * precision * recall / (precision + recall)
    print(f"\n{bundled.name}: {right}/{len(passages)} passages split exactly right "
          f"({right / len(passages):.3f}); boundary P {precision:.3f} R {recall:.3f} F1 {f1:.3f} "
          f"over {n_expected} true boundaries")
    print("\n".join(wrong))
    assert len(passages) >= 60 and n_expected >= 60
    assert right / len(passages) >= 0.95, wrong
    assert f1 >= 0.97


@pytest.mark.parametrize("article", SAMPLE["articles"], ids=lambda a: a["id"])
def test_default_articles_split_as_labelled(bundled: Splitter, article: dict) -> None:
    found = bundled.split(article["id"], article["text"])
    assert_well_formed(found, article["text"], article["id"])
    assert [[s.paragraph, s.text] for s in found] == article["sentences"]


def test_translation_artifacts_are_decided(bundled: Splitter) -> None:
    # the stray period in "aviation. from Moscow." does not end a sentence
    text = "It was backed by aviation. from Moscow. Fighting resumed."
    assert [s.text for s in bundled.split("a", text)] == [
        "It was backed by aviation. from Moscow.", "Fighting resumed."]
    # a closing quote after a space stays with its sentence, and a lowercase name inside
    # a sentence does not start one
    text = 'Law, "asserting that they" amount to crimes. " The oenegé cites 11 deaths.'
    assert [s.text for s in bundled.split("a", text)] == [
        'Law, "asserting that they" amount to crimes. "', "The oenegé cites 11 deaths."]


def test_offsets_ids_and_paragraphs_on_tricky_text(bundled: Splitter) -> None:
    found = bundled.split("news/7", TRICKY)
    assert_well_formed(found, TRICKY, "news/7")
    assert [(s.paragraph, s.text) for s in found] == [
        (0, "Oil prices hit two-year high"),
        (1, "Brent crude rose 3.5% to $81.20 in the U.S. on Jan. 5, said Dr. J.K. Osei of Acme Corp."),
        (1, "“Prices will rise.”"),
        (1, "Will they?"),
        (1, "Analysts said... maybe."),
        (1, "The war has killed 380,000 people!"),
        (2, 'She explained that "the evidence shows law, "asserting that they" amount to war crimes. "'),
        (3, "no terminal punctuation here"),
    ]
    assert [(a, b, p) for a, b, p in bundled.spans(TRICKY)] == [(s.start, s.end, s.paragraph) for s in found]


def test_every_sample_passage_round_trips_as_one_long_article(bundled: Splitter) -> None:
    separators = ["\n\n", "\n  \n\n", "\r\n\r\n", "\n\t\n"]
    texts = [p["text"] for p in SAMPLE["passages"]]
    text = "".join(t + separators[i % len(separators)] for i, t in enumerate(texts))
    found = bundled.split("long", text)
    assert_well_formed(found, text, "long")
    assert found[-1].paragraph == sum(len(PARAGRAPH_BREAK.split(t)) for t in texts) - 1


@pytest.mark.parametrize("text", ["", " ", "\n\n \t\n", "\r\n"])
def test_blank_text_has_no_sentences(bundled: Splitter, text: str) -> None:
    assert bundled.split("a", text) == []
    assert bundled.spans(text) == []


def test_text_without_terminal_punctuation_is_one_sentence(bundled: Splitter) -> None:
    text = "  Breaking: markets fall as\nrates rise  "
    assert bundled.split("a", text) == [
        Sentence(id="a:0", article_id="a", index=0, paragraph=0, start=2, end=38,
                 text="Breaking: markets fall as\nrates rise")]


def test_missing_nltk_data_falls_back_without_raising(fresh_loader, monkeypatch, tmp_path, caplog) -> None:
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    with caplog.at_level(logging.INFO, logger="qa.sentences"):
        splitter = fresh_loader()
        assert fresh_loader() is splitter
    assert splitter.name.startswith("punkt (bundled parameters v")
    assert len([r for r in caplog.records if r.name == "qa.sentences"]) == 1
    assert [s.text for s in splitter.split("a", "Dr. Smith left. He was tired.")] == [
        "Dr. Smith left.", "He was tired."]


def test_installed_punkt_tab_data_is_used(fresh_loader, monkeypatch, tmp_path) -> None:
    # A stand-in for the real model, with one abbreviation that the bundled set lacks and
    # without "dr": the splitter must follow it.
    model = tmp_path / "tokenizers" / "punkt_tab" / "english"
    model.mkdir(parents=True)
    (model / "abbrev_types.txt").write_text("xyz\n", encoding="utf-8")
    for name in ("collocations.tab", "sent_starters.txt", "ortho_context.tab"):
        (model / name).write_text("", encoding="utf-8")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    splitter = fresh_loader()
    assert splitter.name.startswith("punkt_tab/english (nltk data")
    assert splitter.name != fresh_loader(prefer_nltk_data=False).name
    text = "Dr. Smith met Xyz. Jones in the U.S. on Monday."
    assert [s.text for s in splitter.split("a", text)] == ["Dr.", "Smith met Xyz. Jones in the U.S. on Monday."]


def test_real_punkt_tab_data_is_used_when_installed(fresh_loader) -> None:
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError:
        pytest.skip("nltk punkt_tab data is not installed (nltk.download needs a network); "
                    "the bundled parameters are tested above")
    splitter = fresh_loader()
    assert splitter.name.startswith("punkt_tab/english (nltk data")
    assert [s.text for s in splitter.split("a", "Mr. Smith went to Washington. He stayed.")] == [
        "Mr. Smith went to Washington.", "He stayed."]


def test_orthographic_flags_match_nltk() -> None:
    assert sentences.ORTHO_BEG_UC == punkt._ORTHO_BEG_UC
    assert sentences.ORTHO_MID_LC == punkt._ORTHO_MID_LC


def test_bundled_behaviour_matches_its_recorded_name(bundled: Splitter) -> None:
    texts = [p["text"] for p in SAMPLE["passages"]] + [a["text"] for a in SAMPLE["articles"]] + [TRICKY]
    digest = hashlib.sha256(json.dumps([bundled.spans(t) for t in texts]).encode()).hexdigest()
    if bundled.name not in FINGERPRINTS:
        pytest.skip(f"no fingerprint recorded for {bundled.name!r}; add {digest!r} to FINGERPRINTS")
    assert digest == FINGERPRINTS[bundled.name], (
        "splitting changed but the splitter's name did not: bump RULES_VERSION or "
        f"PARAMETERS_VERSION in qa/sentences.py and record {digest!r}")


# --- long paragraphs ------------------------------------------------------------------------------------

def test_pieces_cover_the_text_exactly_and_prefer_line_then_sentence_ends():
    text = ("A sentence that ends here. " * 50 + "\n") * 40
    cuts = sentences.pieces(text, 0, len(text), size=2000)
    assert cuts[0][0] == 0 and cuts[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in zip(cuts, cuts[1:])) and all(e - s <= 2000 for s, e in cuts)
    assert all(text[e - 1] == "\n" for _, e in cuts[:-1])
    one_line = "A sentence that ends here. " * 200
    assert all(one_line[e - 2:e] == ". " for _, e in sentences.pieces(one_line, 0, len(one_line), 2000)[:-1])
    word = "x" * 5000
    assert sentences.pieces(word, 0, 5000, 2000) == [(0, 2000), (2000, 4000), (4000, 5000)]


def test_a_huge_paragraph_reaches_punkt_in_bounded_pieces(monkeypatch):
    """Punkt's regexes run under nltk's wall-clock timeout: it must never see megabytes at once."""
    splitter = load_splitter()
    seen = []
    real = splitter.tokenizer.span_tokenize

    def spy(text):
        seen.append(len(text))
        return real(text)
    monkeypatch.setattr(splitter.tokenizer, "span_tokenize", spy)
    text = "The committee met again on Tuesday. " * 6000 + "x" * 50_000
    got = splitter.split("a", text)
    assert max(seen) <= sentences.MAX_PIECE and len(seen) > 10
    assert all(text[s.start:s.end] == s.text for s in got) and max(len(s.text) for s in got) <= sentences.MAX_PIECE
    assert got[0].text == "The committee met again on Tuesday." and len(got) > 6000


def test_loading_the_splitter_leaves_out_what_nltk_would_import_for_nothing() -> None:
    """scipy.stats and scikit-learn (half a second of every command's start-up) stay unimported, and
    importable later (sentence-transformers may want them)."""
    import subprocess
    import sys

    code = ("import sys; from qa.sentences import load_splitter; load_splitter(); "  # a failed import leaves parts
            "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith(('sklearn', 'scipy.stats'))})); "
            "import sklearn, scipy.stats; print('later: ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["[]", "later: ok"]
