"""Self-trained sentence embeddings: learn a small static model from the corpus itself, for when no
pretrained model can be had (offline, sensitive machines).

The model is a sentence-transformers ``StaticEmbedding`` (a WordPiece vocabulary learned from the
corpus, one vector per token, averaged) trained with in-batch negatives (the loss of
``MultipleNegativesRankingLoss``) on pairs of texts that talk about the same thing: each sentence with
the next one, each title with its lead. It is saved as an ordinary sentence-transformers folder,
so ``SentenceTransformer(path)`` loads it anywhere.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from qa.embed import Encoder

log = logging.getLogger(__name__)

SELF_TRAINED = "self-trained"  # the manifest's model name for a model trained on the indexed corpus
MODEL_DIR = "model"  # its folder inside an index generation
INFO_FILE = "selftrain.json"


@dataclass(frozen=True)
class Training:
    """How to train. The defaults were measured on BBC News and SQuAD (see docs/benchmarks.md)."""
    dim: int = 256
    vocab_size: int = 30_000
    epochs: int | None = None  # None: as many as fit in pair_views, at most max_epochs
    pair_views: int = 200_000  # pairs seen over all epochs: bounds the training time of big corpora
    max_epochs: int = 30
    batch_size: int = 1024
    learning_rate: float = 0.2
    warmup: float = 0.1  # share of the steps spent ramping the learning rate up
    scale: float = 20.0  # cosine similarities are multiplied by this before the softmax
    seed: int = 12345
    min_sentences: int = 5_000  # below this the model is worse than keyword search alone
    symmetric: bool = False  # also score each positive against every anchor of the batch
    drop_stopwords: bool = False  # stopword tokens get zero vectors, so they do not count at all
    pairs: tuple[str, ...] = ("next", "title")
    init: str = "idf"  # "idf": random token vectors scaled by the token's idf; "ppmi": SVD of
    # token co-occurrence (PPMI), scaled by idf; "random"
    window: int = 20  # co-occurrence window (tokens) for init="ppmi"
    common_component: bool = True  # remove the direction all sentences share (Arora et al. 2017)
    device: str | None = None  # None: the GPU when there is one


@dataclass(frozen=True)
class Document:
    """What training needs from an article: its title and its sentences in order."""
    title: str
    sentences: tuple[str, ...]


def training_pairs(docs: Iterable[Document], kinds: tuple[str, ...] = ("next", "title")) -> list[tuple[str, str]]:
    """(anchor, positive) pairs of texts about the same thing, from the corpus alone.

    next: each sentence with the one after it; skip: each sentence with the one after next;
    title: the title with the first sentence.
    """
    pairs = []
    for d in docs:
        s = d.sentences
        if "next" in kinds:
            pairs += [(s[i], s[i + 1]) for i in range(len(s) - 1)]
        if "skip" in kinds:
            pairs += [(s[i], s[i + 2]) for i in range(len(s) - 2)]
        if "title" in kinds and d.title and s:
            pairs.append((d.title, s[0]))
    return [(a, b) for a, b in pairs if a.strip() and b.strip() and a != b]


def _train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=["[UNK]", "[PAD]"],
                                        show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


def _ppmi_vectors(corpus_ids: list[np.ndarray], article_of: np.ndarray, vocab: int, dim: int, window: int,
                  seed: int):
    """(vocab, dim) float32 unit token vectors: the left singular vectors of the positive PMI of
    tokens seen within `window` tokens of each other in an article (Levy & Goldberg 2014: what
    word2vec factorises, without its sampling). Windows cross sentence ends, so neighbouring
    sentences' words become related, as in the pairs training uses."""
    import scipy.sparse as sp
    import torch
    from sklearn.utils.extmath import randomized_svd

    flat = np.concatenate(corpus_ids) if corpus_ids else np.zeros(0, dtype=np.int64)
    doc = np.repeat(article_of, [len(x) for x in corpus_ids])
    counts = sp.csr_matrix((vocab, vocab), dtype=np.float64)
    for k in range(1, window + 1):  # one offset at a time keeps memory at O(tokens)
        same = doc[k:] == doc[:-k]
        a, b = flat[:-k][same], flat[k:][same]
        counts = counts + sp.csr_matrix((np.ones(2 * len(a)), (np.r_[a, b], np.r_[b, a])), shape=(vocab, vocab))
    total = counts.sum()
    row_p = np.asarray(counts.sum(axis=1)).ravel() / total
    col_p = np.asarray(counts.sum(axis=0)).ravel() ** 0.75  # context smoothing
    col_p /= col_p.sum()
    coo = counts.tocoo()
    pmi = np.log(coo.data / total / (row_p[coo.row] * col_p[coo.col]))
    keep = pmi > 0
    ppmi = sp.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=(vocab, vocab))
    u, _, _ = randomized_svd(ppmi, n_components=dim, n_iter=4, random_state=seed)
    norms = np.linalg.norm(u, axis=1, keepdims=True)
    return torch.from_numpy((u / np.maximum(norms, 1e-12)).astype(np.float32))


def train(docs: list[Document], settings: Training = Training(), progress: bool = True):
    """A SentenceTransformer trained on docs; deterministic for a given seed and device.

    Returns (model, info): info says what it was trained on, for the model card.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pairs = training_pairs(docs, settings.pairs)
    if not pairs:
        raise ValueError("no training pairs: the corpus needs articles with at least two sentences")
    texts = sorted({t for p in pairs for t in p})
    text_id = {t: i for i, t in enumerate(texts)}
    corpus_texts = [t for d in docs for t in (d.title, *d.sentences) if t]
    article_of = np.repeat(np.arange(len(docs)), [len(d.sentences) + bool(d.title) for d in docs])
    tokenizer = _train_tokenizer(corpus_texts, settings.vocab_size)
    ids = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    flat = torch.tensor(np.fromiter((t for x in ids for t in x), dtype=np.int64, count=int(lengths.sum())))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    pair_ids = np.array([(text_id[a], text_id[b]) for a, b in pairs], dtype=np.int64)

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    vocab = tokenizer.get_vocab_size()
    weights = torch.randn(vocab, settings.dim, generator=gen)
    corpus_ids = [np.asarray(e.ids, dtype=np.int64)
                  for e in tokenizer.encode_batch(corpus_texts, add_special_tokens=False)]
    if settings.init == "ppmi":
        # Scaled like the random start (unit variance per element), which the learning rate suits.
        weights = _ppmi_vectors(corpus_ids, article_of, vocab, settings.dim, settings.window, settings.seed)
        weights *= math.sqrt(settings.dim)
    if settings.init in ("idf", "ppmi"):
        # Rare words should count for more than "the" from the first step: the untrained model is
        # then (a projection of) idf-weighted bag-of-words, a fair retriever to start from.
        df = np.zeros(vocab, dtype=np.float64)
        for x in corpus_ids:
            df[np.unique(x)] += 1
        idf = np.log((len(corpus_ids) + 1) / (df + 1))
        weights *= torch.from_numpy(idf / idf.max()).float()[:, None]
    if settings.drop_stopwords:
        from qa.tokens import STOPWORDS

        stop = [i for t, i in tokenizer.get_vocab().items() if t in STOPWORDS]
        weights[stop] = 0.0
    bag = torch.nn.EmbeddingBag.from_pretrained(weights, freeze=False, mode="mean").to(device)
    if settings.drop_stopwords and stop:
        stop_rows = torch.tensor(stop, device=device)
        # With their gradient masked, Adam never moves them (no weight decay).
        bag.weight.register_hook(lambda g: g.index_fill(0, stop_rows, 0.0))
    epochs = settings.epochs or max(1, min(settings.max_epochs, round(settings.pair_views / len(pairs))))
    batch = min(settings.batch_size, len(pairs))
    steps_per_epoch = len(pairs) // batch
    total = max(1, epochs * steps_per_epoch)
    opt = torch.optim.AdamW(bag.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    warm = max(1, int(settings.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: min((step + 1) / warm, max(0.0, (total - step) / max(1, total - warm))))
    labels = torch.arange(batch, device=device)

    def embed(rows: np.ndarray) -> "torch.Tensor":
        lens = lengths[rows]
        tok = torch.cat([flat[starts[r]:starts[r] + lengths[r]] for r in rows]) if lens.sum() else flat[:0]
        offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lens)[:-1]]))
        return torch.nn.functional.normalize(bag(tok.to(device), offsets.to(device)), dim=-1)

    bar = tqdm(total=total, desc="training the self-trained model", unit="step", disable=not progress)
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(pair_ids))
        for step in range(steps_per_epoch):
            rows = pair_ids[order[step * batch:(step + 1) * batch]]
            a, b = embed(rows[:, 0]), embed(rows[:, 1])
            sim = settings.scale * a @ b.T
            loss = torch.nn.functional.cross_entropy(sim, labels)
            if settings.symmetric:
                loss = (loss + torch.nn.functional.cross_entropy(sim.T, labels)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    vectors = bag.weight.detach().cpu().float()
    if settings.common_component:
        # Every sentence leans the same way (frequent words); that shared direction only adds
        # noise to cosines. Mean pooling is linear, so removing it from each token removes it
        # from every sentence, inside the ordinary StaticEmbedding.
        sample = np.sort(rng.choice(len(texts), size=min(len(texts), 20_000), replace=False))
        with torch.no_grad():
            bag_cpu = torch.nn.EmbeddingBag.from_pretrained(vectors, mode="mean")
            lens = lengths[sample]
            tok = torch.cat([flat[starts[r]:starts[r] + lengths[r]] for r in sample])
            sent = bag_cpu(tok, torch.from_numpy(np.concatenate([[0], np.cumsum(lens)[:-1]])))
            common = torch.linalg.svd(sent, full_matrices=False).Vh[0]
            vectors = vectors - torch.outer(vectors @ common, common)
    static = StaticEmbedding(tokenizer, embedding_weights=vectors)
    model = SentenceTransformer(modules=[static], device="cpu")
    info = {
        "trained_on": "this corpus",
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "articles": len(docs), "sentences": sum(len(d.sentences) for d in docs), "pairs": len(pairs),
        "epochs": epochs, "steps": total, "final_loss": round(float(np.mean(losses[-20:])), 4) if losses else None,
        "vocab": vocab, "device": device, "seconds": round(time.perf_counter() - t0, 1),
        "settings": {k: v for k, v in asdict(settings).items() if k not in ("device", "min_sentences")},
    }
    return model, info
