"""Query expansion: neighbours from a static model's token vectors, and what they add to a question."""
from __future__ import annotations

import numpy as np
import pytest

from qa.expand import WordNeighbours, expand


def static_model(words: list[str], vectors: np.ndarray):
    """A StaticEmbedding model whose whole-word tokens carry the given vectors."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = ["[UNK]", "[PAD]", *words]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    weights = np.vstack([np.zeros((2, vectors.shape[1])), vectors]).astype(np.float32)
    return SentenceTransformer(modules=[StaticEmbedding(tok, embedding_weights=weights)], device="cpu")


WORDS = ["film", "films", "movie", "cinema", "tax", "rare"]
VECTORS = np.array([[1, 0, 0], [1, 0.2, 0], [0.9, 0.3, 0], [0.6, 0.6, 0], [0, 0, 1], [1, 0.1, 0]], dtype=np.float32)


@pytest.fixture
def neighbours() -> WordNeighbours:
    df = {"film": 50, "movi": 40, "cinema": 30, "tax": 60, "rare": 2}
    return WordNeighbours.from_model(static_model(WORDS, VECTORS), df, min_df=20)


def test_words_of_one_stem_share_a_vector_and_neighbours_come_nearest_first(neighbours):
    near = neighbours.nearest("film", top=3, min_cosine=0.4)
    assert [t for t, _ in near] == ["movi", "cinema"]  # "films" is "film" itself; "tax" too far
    assert near[0][1] > near[1][1] > 0.4


def test_rare_words_and_unknown_tokens_are_no_ones_neighbours(neighbours):
    assert "rare" not in [t for t, _ in neighbours.nearest("film", top=5, min_cosine=-1)]
    assert neighbours.nearest("rare", top=2, min_cosine=0.4)  # but a rare word has neighbours itself
    assert neighbours.nearest("unseen") == []


def test_expand_skips_framing_words_the_question_and_repeats(neighbours):
    assert expand(["film", "movi", "tax"], neighbours) == ["cinema"]
    assert expand(["film"], neighbours, skip=frozenset({"film"})) == []
    assert expand(["film", "cinema"], neighbours, top=1) == ["movi"]


def test_a_model_without_token_vectors_gives_no_neighbours():
    class Transformer:  # the first module of a pretrained transformer model: no word vectors
        tokenizer = None

    assert WordNeighbours.from_model([Transformer()], {"film": 50}) is None
