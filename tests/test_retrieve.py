"""Retrieval on the default corpus: the right sentence first, merged duplicates, context, filters."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from qa.embed import KEYWORD_ONLY, PRETRAINED, Mode, load_encoder
from qa.expand import WordNeighbours
from qa.retrieve import SELF_TRAINED_WEIGHTS, Retriever, same_fact
from qa.tokens import tokenize

A, B = "000_24bd21a41d8b3e79", "002_3d1258f428892b47"

# question -> words the top sentence must contain
QUESTIONS = {
    "How many civilians were killed near the hospital in Ariha?": "11 civilians",
    "Which school was hit with cluster munitions?": "cluster",
    "Who is Amnesty's regional director?": "Heba Morayef",
    "How many attacks on medical facilities and schools did Amnesty document?": "18 attacks",
    "How many people live in the Idlib region?": "three million",
    "How many deaths has the war in Syria caused?": "380,000",
    "How many people did Amnesty interview for the report?": "70 people",
    "Since when has the ceasefire been in effect?": "March",
    "What support did Russia provide to the regime?": "military support",
    "How many attacks were carried out with barrel bombs?": "barrel bombs",
}


@pytest.fixture(params=["keyword", "hybrid"])
def retriever(request, keyword_index, hybrid_index, tiny_model):
    if request.param == "keyword":
        return Retriever.load(keyword_index)
    return Retriever.load(hybrid_index, encoder=load_encoder(str(tiny_model)))


@pytest.mark.parametrize("question,expected", QUESTIONS.items())
def test_right_sentence_first(retriever, question, expected):
    assert expected in retriever.search(question, k=5)[0].text


def test_mode(keyword_index, hybrid_index, tiny_model):
    assert Retriever.load(keyword_index).mode == Mode(KEYWORD_ONLY)
    assert Retriever.load(hybrid_index, encoder=load_encoder(str(tiny_model))).mode == Mode(PRETRAINED, str(tiny_model))
    assert str(Retriever.load(hybrid_index, encoder=load_encoder(str(tiny_model))).mode).startswith("hybrid (")
    assert Retriever.load(hybrid_index, load_model=False).mode.kind == KEYWORD_ONLY


def test_same_fact_in_two_articles_is_one_hit_listing_both(retriever):
    hit = retriever.search("How many civilians were killed near the hospital in Ariha?", k=3)[0]
    assert {p.article_id for p in hit.sources} == {A, B}
    assert "Ariha" in hit.sources[0].text and "Jericho" in hit.sources[1].text
    assert hit.sources[0] == hit.passage


def test_hit_carries_citation_fields_and_context(keyword_index):
    r = Retriever.load(keyword_index)
    hit = r.search("Which school was hit with cluster munitions?", k=1)[0]
    p = hit.passage
    assert (p.article_id, p.published, p.index) == (A, "2020-05-11", 9)
    assert p.sentence_id == f"{A}:9"
    assert r.article(A).text[p.start:p.end] == p.text
    assert hit.before and "Ariha" in hit.before[0] and hit.after and "Morayef" in hit.after[0]
    assert 0 < hit.support <= 1 and hit.dense is None and hit.score > 0


def test_hits_are_distinct_and_ranked(retriever):
    hits = retriever.search("attacks on hospitals and schools", k=5)
    assert len(hits) == 5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len({h.passage.sentence_id for h in hits}) == 5


def test_filters(keyword_index):
    r = Retriever.load(keyword_index)
    only_b = r.search("killed 11 civilians hospital", k=3, since="2020-01-01")
    assert all(h.article_id == A for h in only_b)  # B has no date, so a date filter excludes it
    assert r.search("killed 11 civilians", sources=["nobody"]) == []


def test_off_topic_and_empty_questions(keyword_index):
    r = Retriever.load(keyword_index)
    assert r.search("", k=5) == []
    assert r.search("the of and", k=5) == []
    assert r.search("quarterly semiconductor earnings", k=5) == []


def test_huge_question_does_not_break(keyword_index):
    assert Retriever.load(keyword_index).search("Ariha hospital civilians " * 5000, k=2)


def test_same_fact():
    a = set(tokenize("Russian strikes near a hospital in Jericho on January 29 killed 11 civilians."))
    b = set(tokenize("Russian bombardments near a hospital in Ariha on January 29 killed 11 civilians."))
    c = set(tokenize("A ceasefire has been in effect since March 6 in and around Idlib."))
    assert same_fact(a, b) and not same_fact(a, c)


def test_expansion_finds_a_sentence_worded_differently_only_when_the_words_fall_short(hybrid_index, tiny_model):
    encoder = load_encoder(str(tiny_model))

    def load(**weights) -> Retriever:
        # the model's cosine left out (dense 0): only the expansion differs, whatever the tiny model learnt
        w = dataclasses.replace(SELF_TRAINED_WEIGHTS, dense=0.0, dense_weak=None, **weights)
        return Retriever.load(hybrid_index, encoder=encoder, weights=w)

    expanded, plain = load(expand_below=1.01), load(expansion=0.0)
    vectors = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    expanded.neighbours = WordNeighbours(["outlaw", "weapon", "prohibit", "munit", "tax"], vectors, np.ones(5, bool))
    question = "What weapons were outlawed?"  # the article: "cluster munitions - prohibited by international law"
    assert "munitions" not in plain.search(question, k=3)[0].text
    assert "munitions" in expanded.search(question, k=3)[0].text
    # a question the words answer well is left alone
    covered = "How many civilians were killed near the hospital in Ariha?"
    gated, ungated = load(expansion=5.0), load(expansion=5.0, expand_below=1.01)
    for r in (gated, ungated):
        r.neighbours = WordNeighbours(["civilian", "regim"], vectors[[0, 0]], np.ones(2, bool))
    texts = [h.text for h in plain.search(covered, k=5)]
    assert [h.text for h in gated.search(covered, k=5)] == texts
    assert [h.text for h in ungated.search(covered, k=5)] != texts  # what the gate kept out


def test_keyword_only_ignores_expansion(keyword_index, hybrid_index):
    question = "What weapons were outlawed?"
    with_weights = Retriever.load(hybrid_index, load_model=False, weights=SELF_TRAINED_WEIGHTS)
    assert with_weights.neighbours is None
    assert [h.text for h in with_weights.search(question, k=5)] == \
        [h.text for h in Retriever.load(keyword_index).search(question, k=5)]


def test_model_gets_places_when_the_words_fall_short(hybrid_index, tiny_model):
    encoder = load_encoder(str(tiny_model))

    def ids(question: str, **weights) -> list[str]:
        w = dataclasses.replace(SELF_TRAINED_WEIGHTS, expansion=0.0, **weights)
        return [h.passage.sentence_id for h in Retriever.load(hybrid_index, encoder=encoder, weights=w).search(question, k=10)]

    moved = 0
    for question in ("What weapons were outlawed?", "Who fled the fighting?", "What did the watchdog say?",
                     "How long has the truce held?"):
        fused = ids(question, dense_places=0.0)
        placed = ids(question, dense_places=0.3, places_below=1.01)
        model_only = ids(question, sentence=0.0, window=0.0, article=0.0, dense_weak=None)
        assert placed[:7] == fused[:7]  # the last 3 places go to the model's best matches
        assert set(placed[7:]) <= set(model_only) | set(fused)
        assert ids(question, dense_places=0.3, places_below=0.0) == fused  # words cover enough: no places
        moved += bool(set(placed[7:]) - set(fused))  # a model match the fused top 10 did not have
    assert moved


def test_the_keyword_pool_is_the_best_of_every_sentence(keyword_index):
    """The keyword pool reads only the terms' postings and the best articles, yet it is exactly the
    pool best of scoring every sentence of the index."""
    from collections import Counter
    from qa.retrieve import _KeywordQuery
    r = Retriever.load(keyword_index)
    (shard,) = r.shards.shards
    for q in ("How many civilians were killed near the hospital in Ariha?", "cluster munitions school Idlib",
              "Which human rights group accuses Russia of war crimes?", "displaced people camps winter",
              "Ariha", "Syria"):  # the last two: sentences tied on their article's score alone
        kw = _KeywordQuery(r, Counter(tokenize(q)), None)
        scores = shard._held(kw.qid)
        every = np.concatenate([scores.fused(n, kw.scale, np.arange(seg.sentences))
                                for n, seg in enumerate(shard.segments)])
        first = r.offsets()
        for size in (5, 40):
            pool, pool_scores = kw.top(size, positive=True)
            best = np.lexsort((np.arange(len(every)), -every))[:size]  # ties: index order
            best = best[every[best] > 0]
            assert [first[i] + row for i, row in pool] == best.tolist()
            assert pool_scores.tolist() == every[best].tolist()
            assert kw.scores(pool)[0].tolist() == pool_scores.tolist()


def test_the_pool_past_the_bar_is_the_best_of_every_sentence(tmp_path, monkeypatch):
    """With many more articles than the pool, rows that cannot reach the best articles' pool-th
    sentence are never scored (both ways of leaving them out: by the postings' rows, and by taking
    the sentences of the articles that can), yet the pool is exactly that of scoring every sentence."""
    import json
    import random
    from collections import Counter

    from qa import shard
    from qa.index import build_index
    from qa.retrieve import _KeywordQuery
    from qa.sentences import load_splitter
    rng = random.Random(7)
    words = ["harbour", "ferry", "storm", "council", "budget", "school", "river", "bridge", "strike", "museum",
             "hospital", "election", "train", "festival", "market", "police", "farm", "airport", "court", "library"]
    words += [f"{w}s" for w in words] + [f"{w}side" for w in words]  # 60 words: some rare in an article
    lines = []
    for a in range(150):
        sentences = [" ".join(rng.choices(words, k=rng.randint(3, 9))).capitalize() + "." for _ in range(rng.randint(2, 8))]
        lines.append(json.dumps({"id": f"a{a}", "title": f"Story {a}", "text": " ".join(sentences)}))
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "news.jsonl").write_text("\n".join(lines), encoding="utf-8")
    build_index(tmp_path / "corpus", tmp_path / "index", load_splitter(), None, mode_reason="test", progress=False)
    r = Retriever.load(tmp_path / "index")
    (sh,) = r.shards.shards
    ways = Counter()
    real = shard._sentences
    monkeypatch.setattr(shard, "_sentences", lambda seg, arts: ways.update(["calls"]) or real(seg, arts))
    for q in ("ferry storm harbour", "council budget strike", "museum", "river bridge train airport", "court library"):
        for size in (5, 12, 40):
            kw = _KeywordQuery(r, Counter(tokenize(q)), None)
            scores = sh._held(kw.qid)
            every = np.concatenate([scores.fused(n, kw.scale, np.arange(seg.sentences)) for n, seg in enumerate(sh.segments)])
            before = ways["calls"]
            pool, pool_scores = kw.top(size, positive=True)
            ways["good articles" if ways["calls"] - before > 1 else "postings' rows"] += 1
            best = np.lexsort((np.arange(len(every)), -every))[:size]
            best = best[every[best] > 0]
            assert [r.offsets()[i] + row for i, row in pool] == best.tolist(), q
            assert pool_scores.tolist() == every[best].tolist()
            kw.close()
    assert ways["good articles"] and ways["postings' rows"]  # both ways were taken


def test_a_question_whose_scores_were_lost_is_asked_again(keyword_index, monkeypatch):
    """A shard that no longer holds a question's scores (a restarted Ray actor) says so, and the
    search starts again once instead of failing."""
    from qa import shard
    r = Retriever.load(keyword_index)
    q = "How many civilians were killed near the hospital in Ariha?"
    expected = r.search(q, k=5)
    real, calls = shard.Shard.top, []

    def forgetful(self, qid, *args):
        calls.append(qid)
        if len(calls) == 1:
            self.finish(qid)  # what a restart does to an actor's questions
        return real(self, qid, *args)

    monkeypatch.setattr(shard.Shard, "top", forgetful)
    assert r.search(q, k=5) == expected
    assert len(calls) == 2 and calls[0] != calls[1]
