"""Query expansion: the corpus words nearest a question's keywords by a static model's token vectors."""
from __future__ import annotations

import numpy as np

from qa.tokens import tokenize


class WordNeighbours:
    """Keyword tokens (qa.tokens) with a unit vector each: the mean of the model's vectors for the
    whole words that stem to the token. Only tokens in at least min_df sentences can be neighbours:
    the vectors of rare words are noise (a word seen twice is "near" whatever it was seen with)."""

    def __init__(self, tokens: list[str], vectors: np.ndarray, candidate: np.ndarray):
        """tokens: n keyword tokens; vectors: (n, d) float32, unit rows; candidate: (n,) bool."""
        self.row = {t: i for i, t in enumerate(tokens)}
        self.vectors = vectors
        self.candidates = [t for t, c in zip(tokens, candidate) if c]
        self.candidate_vectors = np.ascontiguousarray(vectors[candidate])

    @classmethod
    def from_model(cls, model, df: dict[str, int], min_df: int = 20) -> "WordNeighbours | None":
        """From a sentence-transformers model whose first module is a StaticEmbedding (a self-trained
        model is one); None for any other model, whose token vectors are not word meanings.
        df: keyword token -> number of sentences holding it (the keyword index's vocabulary)."""
        module = model[0]
        if not (hasattr(module, "embedding") and hasattr(module, "tokenizer")):
            return None
        weights = module.embedding.weight.detach().cpu().numpy()
        words: dict[str, list[int]] = {}
        for piece, i in module.tokenizer.get_vocab().items():
            if piece.startswith("##") or len(piece) < 2:
                continue
            t = tokenize(piece)
            if len(t) == 1 and t[0] in df:
                words.setdefault(t[0], []).append(i)
        if not words:
            return None
        tokens = sorted(words)
        vectors = np.stack([weights[words[t]].mean(axis=0) for t in tokens])
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
        candidate = np.array([df[t] >= min_df for t in tokens])
        return cls(tokens, vectors.astype(np.float32), candidate)

    def nearest(self, token: str, top: int = 3, min_cosine: float = 0.4) -> list[tuple[str, float]]:
        """Up to top (token, cosine) pairs nearest token, nearest first, each at least min_cosine."""
        i = self.row.get(token)
        if i is None:
            return []
        cos = self.candidate_vectors @ self.vectors[i]
        best = np.argpartition(-cos, top)[:top + 1] if top + 1 < len(cos) else np.arange(len(cos))
        best = best[np.argsort(-cos[best], kind="stable")]
        return [(self.candidates[j], float(cos[j])) for j in best
                if cos[j] >= min_cosine and self.candidates[j] != token][:top]


def expand(terms: list[str], neighbours: WordNeighbours, skip: frozenset[str] = frozenset(),
           top: int = 3, min_cosine: float = 0.4) -> list[str]:
    """Extra keyword tokens for a question: the nearest neighbours of each of its terms (not those in
    skip, such as words that only frame the question), without the terms themselves or repeats."""
    seen, out = set(terms), []
    for t in dict.fromkeys(terms):
        if t in skip:
            continue
        for n, _ in neighbours.nearest(t, top, min_cosine):
            if n not in seen:
                seen.add(n)
                out.append(n)
    return out
