"""Self-trained sentence embeddings: a small model learned from the indexed articles alone, for when
no pretrained model can be had (offline or sensitive machines).

The model is a sentence-transformers ``StaticEmbedding``: a WordPiece vocabulary learned from the
corpus, one vector per token, averaged. Training has four steps, all on the corpus:
1. the vocabulary;
2. token vectors from co-occurrence: the truncated SVD of the positive PMI of tokens near each other
   in an article (what word2vec factorises, Levy & Goldberg 2014), scaled by idf;
3. in-batch-negatives training (the loss of ``MultipleNegativesRankingLoss``) on pairs of texts about
   the same thing: each sentence with the next one, each title with its first sentence;
4. removal of the direction every sentence shares (Arora et al. 2017).
It is saved as an ordinary sentence-transformers folder with a model card: ``SentenceTransformer(path)``.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from qa.embed import Encoder, ModelUnavailable, weights_fingerprint

log = logging.getLogger(__name__)

SELF_TRAINED = "self-trained"  # the manifest's model for a model trained on the indexed corpus
MODEL_DIR = "model"  # its folder inside an index generation
INFO_FILE = "selftrain.json"  # what it was trained on, beside the model


@dataclass(frozen=True)
class Training:
    """How to train; the defaults were measured on BBC News and SQuAD (docs/benchmarks.md)."""
    dim: int = 256
    vocab_size: int = 50_000
    window: int = 20  # tokens; co-occurrence windows cross sentence ends within an article
    pair_views: int = 200_000  # pairs seen over all epochs: more epochs for small corpora, one for big
    max_epochs: int = 30
    batch_size: int = 1024
    learning_rate: float = 0.02
    warmup: float = 0.1  # share of the steps spent raising the learning rate
    scale: float = 20.0  # cosines are multiplied by this before the softmax
    seed: int = 12345
    min_sentences: int = 2_000  # below this the index stays keyword-only (measured: bench/selftrain.py)
    device: str | None = None  # None: the GPU when there is one


@dataclass(frozen=True)
class Document:
    """What training needs from an article: its title ('' if none) and its sentences in order."""
    title: str
    sentences: tuple[str, ...]


def training_pairs(docs: list[Document]) -> list[tuple[str, str]]:
    """(anchor, positive) texts about the same thing: each sentence with the next, the title with the lead."""
    pairs = []
    for d in docs:
        s = d.sentences
        pairs += [(s[i], s[i + 1]) for i in range(len(s) - 1)]
        if d.title and s:
            pairs.append((d.title, s[0]))
    return [(a, b) for a, b in pairs if a.strip() and b.strip() and a != b]


def train(docs: list[Document], settings: Training = Training(), progress: bool = True):
    """(model, info): a SentenceTransformer trained on docs alone, and what it was trained on (a
    JSON-able dict for the model card). The same docs and settings give the same model on the CPU
    (on a GPU, summation order may change the last bits)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    t0 = time.perf_counter()
    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pairs = training_pairs(docs)
    if not pairs:
        raise ValueError("nothing to train on: the articles need at least two sentences each")
    texts = [t for d in docs for t in (d.title, *d.sentences) if t]
    article_of = np.repeat(np.arange(len(docs)), [len(d.sentences) + bool(d.title) for d in docs])
    tokenizer = _train_tokenizer(texts, settings.vocab_size)
    token_ids = [np.asarray(e.ids, dtype=np.int64) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    vocab = tokenizer.get_vocab_size()
    log.info("self-training: %d articles, %d texts, %d tokens, vocabulary %d", len(docs), len(texts),
             sum(map(len, token_ids)), vocab)
    vectors = _cooccurrence_vectors(token_ids, article_of, vocab, settings)
    text_row = {t: i for i, t in enumerate(texts)}
    pair_rows = np.array([(text_row[a], text_row[b]) for a, b in pairs], dtype=np.int64)
    vectors, epochs, steps, loss = _contrastive(vectors, token_ids, pair_rows, settings, device, progress)
    vectors = _without_common_direction(vectors, token_ids, settings.seed)
    model = SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_weights=vectors)], device="cpu")
    info = {
        "trained_on": "this corpus only", "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "articles": len(docs), "sentences": sum(len(d.sentences) for d in docs), "pairs": len(pairs),
        "vocab": vocab, "epochs": epochs, "steps": steps, "final_loss": loss, "device": device,
        "seconds": round(time.perf_counter() - t0, 1), "settings": asdict(settings),
    }
    return model, info


def _train_tokenizer(texts: list[str], vocab_size: int, min_count: int = 1):
    """A WordPiece tokenizer whose vocabulary is the corpus's words seen at least min_count times
    (most frequent first, ties alphabetical) and every character, alone and as a word piece, for
    the rest. Built here rather than by the tokenizers trainer, which breaks ties in a different
    random order on every run and so would not give the same model twice."""
    from collections import Counter

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    normalizer, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    counts = Counter(w for t in texts for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(t)))
    chars = sorted({c for w in counts for c in w})
    vocab = ["[UNK]", "[PAD]", *chars, *(f"##{c}" for c in chars)]
    words = sorted((w for w, n in counts.items() if n >= min_count and len(w) > 1), key=lambda w: (-counts[w], w))
    vocab += words[:max(0, vocab_size - len(vocab))]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre
    return tok


def _cooccurrence_vectors(token_ids: list[np.ndarray], article_of: np.ndarray, vocab: int, settings: Training):
    """(vocab, dim) float32 start vectors: left singular vectors of the positive PMI of tokens within
    `window` tokens of each other in an article, unit length, scaled by idf (rare words count for
    more than "the") and by sqrt(dim) (unit variance per element, the scale the learning rate suits)."""
    import scipy.sparse as sp
    import torch
    from sklearn.utils.extmath import randomized_svd

    flat = np.concatenate(token_ids)
    doc = np.repeat(article_of, [len(x) for x in token_ids])
    counts = sp.csr_matrix((vocab, vocab), dtype=np.float64)
    for k in range(1, settings.window + 1):  # one offset at a time keeps memory at O(tokens)
        same = doc[k:] == doc[:-k]
        a, b = flat[:-k][same], flat[k:][same]
        counts = counts + sp.csr_matrix((np.ones(2 * len(a)), (np.r_[a, b], np.r_[b, a])), shape=(vocab, vocab))
    coo = counts.tocoo()
    total = coo.data.sum()
    row_p = np.asarray(counts.sum(axis=1)).ravel() / total
    col_p = np.asarray(counts.sum(axis=0)).ravel() ** 0.75  # context smoothing (Levy et al. 2015)
    col_p /= col_p.sum()
    pmi = np.log(coo.data / total / (row_p[coo.row] * col_p[coo.col]))
    keep = pmi > 0
    ppmi = sp.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=(vocab, vocab))
    k = min(settings.dim, vocab - 1)
    vectors = np.zeros((vocab, settings.dim))
    vectors[:, :k] = randomized_svd(ppmi, n_components=k, n_iter=4, random_state=settings.seed)[0]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unseen = norms[:, 0] < 1e-9  # tokens that never met another: a random direction of their own
    vectors[unseen] = np.random.default_rng(settings.seed).standard_normal((int(unseen.sum()), settings.dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    df = np.zeros(vocab)
    for x in token_ids:
        df[np.unique(x)] += 1
    idf = np.log((len(token_ids) + 1) / (df + 1))
    vectors *= (idf / idf.max())[:, None] * math.sqrt(settings.dim)
    return torch.from_numpy(vectors.astype(np.float32))


def _bags(token_ids: list[np.ndarray]):
    """A function rows -> (flat token ids, offsets) for an EmbeddingBag over those texts."""
    import torch

    lengths = np.array([len(x) for x in token_ids], dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    flat = np.concatenate(token_ids)

    def bag(rows: np.ndarray):
        lens = lengths[rows]
        offsets = np.cumsum(lens) - lens
        take = np.repeat(starts[rows] - offsets, lens) + np.arange(lens.sum())
        return torch.from_numpy(flat[take]), torch.from_numpy(offsets)
    return bag


def _contrastive(vectors, token_ids: list[np.ndarray], pair_rows: np.ndarray, settings: Training, device: str,
                 progress: bool):
    """Train the token vectors so that each anchor's mean vector is nearest its own positive among the
    batch's positives. Returns (vectors, epochs, steps, mean loss of the last steps)."""
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    emb = torch.nn.EmbeddingBag.from_pretrained(vectors.clone(), freeze=False, mode="mean").to(device)
    batch = min(settings.batch_size, len(pair_rows))
    epochs = max(1, min(settings.max_epochs, round(settings.pair_views / len(pair_rows))))
    per_epoch = len(pair_rows) // batch
    total = epochs * per_epoch
    opt = torch.optim.AdamW(emb.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    warm = max(1, int(settings.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: min((step + 1) / warm, max(0.0, (total - step) / max(1, total - warm))))
    labels = torch.arange(batch, device=device)
    bag = _bags(token_ids)

    def encode(rows: np.ndarray):
        ids, offsets = bag(rows)
        return torch.nn.functional.normalize(emb(ids.to(device), offsets.to(device)), dim=-1)

    losses = []
    with tqdm(total=total, desc="training a model on this corpus", unit="step", disable=not progress) as bar:
        for _ in range(epochs):
            order = rng.permutation(len(pair_rows))
            for step in range(per_epoch):
                rows = pair_rows[order[step * batch:(step + 1) * batch]]
                scores = settings.scale * encode(rows[:, 0]) @ encode(rows[:, 1]).T
                loss = torch.nn.functional.cross_entropy(scores, labels)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return emb.weight.detach().cpu().float(), epochs, total, round(float(np.mean(losses[-20:])), 4)


def _without_common_direction(vectors, token_ids: list[np.ndarray], seed: int, sample: int = 20_000):
    """Every sentence leans the same way (frequent words), which only adds noise to cosines. Mean
    pooling is linear, so taking that direction out of each token vector takes it out of every
    sentence, inside an ordinary StaticEmbedding."""
    import torch

    rows = np.sort(np.random.default_rng(seed).choice(len(token_ids), min(sample, len(token_ids)), replace=False))
    ids, offsets = _bags(token_ids)(rows)
    with torch.no_grad():
        sentences = torch.nn.functional.embedding_bag(ids, vectors, offsets, mode="mean")
        common = torch.linalg.svd(sentences, full_matrices=False).Vh[0]
        return vectors - torch.outer(vectors @ common, common)


def save(model, info: dict, path: str | Path) -> None:
    """Write model as a sentence-transformers folder with a model card (README.md) and INFO_FILE."""
    path = Path(path)
    model.save(str(path), create_model_card=False)
    (path / INFO_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
    (path / "README.md").write_text(model_card(info), encoding="utf-8")


def load(path: str | Path, device: str = "cpu") -> Encoder:
    """The self-trained model in path as an Encoder named SELF_TRAINED (CPU: a static model is faster
    there than the round trip to a GPU). Raises ModelUnavailable when path holds no usable model."""
    from sentence_transformers import SentenceTransformer

    path = Path(path)
    if not (path / "modules.json").is_file():
        raise ModelUnavailable(f"{path} holds no sentence-transformers model")
    try:
        return Encoder(SentenceTransformer(str(path), device=device, local_files_only=True), SELF_TRAINED,
                       weights_fingerprint(path))
    except (OSError, ValueError, KeyError) as e:
        raise ModelUnavailable(f"the model in {path} cannot be loaded: {e}") from e


def describe(info: dict) -> str:
    """One line for the manifest and the chat header."""
    return (f"self-trained on this corpus ({info['articles']:,} articles, {info['sentences']:,} sentences) "
            f"on {info['trained_at'][:10]}")


def model_card(info: dict) -> str:
    s = info["settings"]
    return f"""---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
tags:
- sentence-transformers
- static-embeddings
- self-trained
---

# Self-trained static embeddings for one news archive

Trained by `qa index` (`qa.selftrain`) at {info['trained_at']} on this index's own articles only:
{info['articles']:,} articles, {info['sentences']:,} sentences. No other text and no pretrained
weights were used. Reproducible: the same articles and settings give the same model.

## Training

1. A WordPiece vocabulary of {info['vocab']:,} tokens learned from the articles.
2. {s['dim']}-dimensional token vectors: truncated SVD of the positive PMI of tokens within
   {s['window']} tokens of each other in an article, scaled by idf.
3. {info['pairs']:,} pairs of texts about the same thing (each sentence with the next one, each
   title with its first sentence), in-batch negatives (the loss of `MultipleNegativesRankingLoss`,
   scale {s['scale']}): {info['epochs']} epochs, {info['steps']} steps of batch {s['batch_size']},
   learning rate {s['learning_rate']}, seed {s['seed']}, on {info['device']}; final loss {info['final_loss']}.
4. The direction that all sentences share removed from every token vector.

Took {info['seconds']} s. Settings and counts: `{INFO_FILE}`.

## Use

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("path/to/this/folder")
embeddings = model.encode(["What did the central bank do to borrowing costs?"])
```

## Limits

It knows only the words of these articles and the company they keep there: names, acronyms and
facts that the articles do not connect stay unknown to it. It is meant for the dense half of hybrid
search next to keyword search, not on its own; a pretrained model (for example
`sentence-transformers/multi-qa-MiniLM-L6-cos-v1`) is better wherever one can be used.
"""
