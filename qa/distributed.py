"""Ingest on a Ray cluster: the corpus read as a Ray dataset, its articles split, tokenized and embedded
by a pool of actors; this process still plans, writes the segments and publishes (qa.index), so the
index is the one a single process builds.

Ray is an optional extra (`pip install -e '.[ray]'`), imported here only and only when used: qa runs
without it. The corpus must be readable at the same path on every node (shared storage), since read
tasks open its files by path; the index is written by this process only.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from qa.articles import Article, CorpusFile, CorpusReader, read_file, text_key
from qa.embed import Encoder
from qa.index import Columns, Deferred, is_known, prepare
from qa.selftrain import SELF_TRAINED
from qa.sentences import Splitter

log = logging.getLogger(__name__)

# Articles per actor call. Splitting and tokenizing: 256, as a call has a fixed cost (a 20k-sentence
# build with 2 workers: 1,460 and 1,307 sentences/s against 1,333 and 1,183 with 64; two rounds, 2
# loaded cores). Embedding: 32 (150-700 sentences, seconds of work each), so that a small corpus
# still spreads over the actors (5k sentences, MiniLM, 2 workers: 53 sentences/s against 43 with 256).
ARTICLES_PER_BATCH = 256
ARTICLES_PER_EMBED_BATCH = 32
ROWS_PER_BLOCK = 256  # a read task hands on a block every so many articles: a file of any size streams
BYTES_PER_READ = 64 * 2**20  # files are grouped into read tasks of about this many bytes (a file at least)
# Failures are Ray Data's to repair, with its defaults: a read task whose worker died runs again, an
# actor that died is restarted and its batch retried, without limit (max_retries, max_restarts and
# max_task_retries -1; setting them here is deprecated in Ray 2.60). An exception inside a batch is
# no failure of that kind: it ends the build, and the previous index stays live.
PROBLEM, ARTICLE, KNOWN = "problem", "article", "known"  # KNOWN: an article the index holds as it is
_FIELDS = ("id", "title", "source", "published", "url", "text", "origin", "content_hash")


class RayUnavailable(RuntimeError):
    """Ray is not installed or its cluster cannot be reached; the message says how to fix it."""


def connect(where: str, num_cpus: int | None = None) -> None:
    """Join a Ray cluster: 'local' starts one on this machine (num_cpus of them; default all), 'auto'
    joins the one this machine belongs to (`ray start`, or RAY_ADDRESS), anything else is the head's
    address ('head:6379'). Does nothing when this process is connected already."""
    ray = _ray()
    if ray.is_initialized():
        return
    try:
        if where == "local":
            # Ray starts workers at niceness 15, behind every other process; the driver waits on them
            # (a search, a build), so a cluster started here runs them at 0. For `ray start`, set
            # RAY_worker_niceness=0 in its environment.
            os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                     logging_level=logging.WARNING)
        else:
            ray.init(address=where, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RayUnavailable(f"cannot reach a Ray cluster at {where!r} ({e}); start one with `ray start --head` "
                             "and pass --ray auto (or its address), or use --ray local") from e


def disconnect() -> None:
    """Leave the cluster (a local one stops)."""
    _ray().shutdown()


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise RayUnavailable("--ray needs Ray, an optional extra; install it with: "
                             ".venv/bin/pip install -c constraints.txt -e '.[ray]'") from e
    return ray


@dataclass(frozen=True)
class RayIngest:
    """A qa.index.Ingest on the Ray cluster this process is connected to (connect first): files read
    by read tasks with qa.articles' own parser, articles prepared (qa.index.prepare) and embedded by
    an actor pool that gets the model once per actor, on a GPU each when the cluster has them."""
    workers: int | None = None  # actors; None: one per CPU of the cluster (per GPU when embedding on GPUs)
    # read tasks at a time; None: one per 8 workers, as parsing costs an eighth of splitting and
    # tokenizing (0.5 against 4.0 CPU s for a 20k-sentence archive, cProfile). One file is one reader.
    readers: int | None = None

    def __call__(self, reader: CorpusReader, files: list[CorpusFile], splitter: Splitter,
                 encoder: Encoder | None, known: np.ndarray | None = None) -> Iterator[
                     tuple[Article, CorpusFile, Deferred | None]]:
        if not files:
            return
        ray = _ray()
        gpus = encoder is not None and encoder.info.name != SELF_TRAINED \
            and ray.cluster_resources().get("GPU", 0) >= 1
        workers = self.workers or int(ray.cluster_resources().get("GPU" if gpus else "CPU", 1))
        context = ray.data.DataContext.get_current()
        saved = context.execution_options.preserve_order, context.enable_progress_bars
        # The driver writes articles in the order a single process reads them: the same ids, rows, segments.
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False  # the build's own bar counts articles and sentences
        # Ray Data's notes that a dataset starts and ends, and that its own bars are off, are no news here
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
        logging.getLogger("ray.data._internal.execution.streaming_executor").setLevel(logging.WARNING)
        try:
            ds = ray.data.read_datasource(_datasource(files), concurrency=self.readers or max(1, workers // 8),
                                          num_cpus=0)
            ds = ds.map_batches(Prepare, fn_constructor_args=(splitter, ray.put(encoder) if encoder else None,
                                                              None if known is None or not len(known) else ray.put(known)),
                                batch_size=ARTICLES_PER_EMBED_BATCH if encoder else ARTICLES_PER_BATCH,
                                batch_format="pyarrow",
                                compute=ray.data.ActorPoolStrategy(size=workers),
                                num_cpus=1, num_gpus=1 if gpus else 0)
            log.info("ingest on Ray: %d %s actor%s, %d files", workers, "GPU" if gpus else "CPU",
                     "s" * (workers != 1), len(files))
            yield from admitted(ds.iter_batches(batch_size=None, batch_format="pyarrow"), reader, files,
                                encoder.info.dim if encoder else 0)
        finally:
            context.execution_options.preserve_order, context.enable_progress_bars = saved


def admitted(batches, reader: CorpusReader, files: list[CorpusFile],
             dim: int) -> Iterator[tuple[Article, CorpusFile, Deferred | None]]:
    """The driver's side: prepared rows (pyarrow tables, in corpus order) back to articles, problems
    reported and duplicates skipped by reader, as reader.articles(files) does. Only the articles' own
    fields become Python objects here; their sentences, tokens and vectors stay in the block until the
    segment writer takes them, a block at a time (Block.columns). An article the index holds already
    comes with None (not prepared). dim: of the vectors (0: none)."""
    import pyarrow.compute as pc

    for batch in batches:
        block = Block(batch, dim)
        counts = pc.list_value_length(batch.column("starts")).to_numpy(zero_copy_only=False)
        for i, row in enumerate(batch.select(["kind", "where", "message", "file", "key", *_FIELDS]).to_pylist()):
            if row["kind"] == PROBLEM:
                reader.report(row["where"], row["message"])
                continue
            article = Article(**{k: row[k] for k in _FIELDS})
            if reader.admit(row["where"], article, row["key"]):
                yield article, files[row["file"]], \
                    None if row["kind"] == KNOWN else Deferred(block, i, int(counts[i]), row["key"])


class Block:
    """A block of prepared rows, as the driver got it: the arrays of some of its rows on demand."""

    def __init__(self, table, dim: int):
        self.table, self.dim = table, dim

    def columns(self, rows: list[int]) -> Columns:
        import pyarrow as pa
        import pyarrow.compute as pc

        t = self.table.take(pa.array(rows, type=pa.int64()))
        tokens = pc.list_flatten(t.column("tokens")).combine_chunks().dictionary_encode()  # terms by first use

        def flat(name: str) -> np.ndarray:
            return pc.list_flatten(t.column(name)).to_numpy().astype(np.int64)

        vectors = None
        if self.dim:
            vectors = np.frombuffer(b"".join(t.column("vectors").to_pylist()), dtype=np.float32).reshape(-1, self.dim)
        return Columns(tokens.dictionary.to_pylist(), tokens.indices.to_numpy().astype(np.int64), flat("lengths"),
                       pc.list_value_length(t.column("starts")).to_numpy().astype(np.int64), flat("paragraphs"),
                       flat("starts"), flat("ends"), vectors)


# -- on the cluster ---------------------------------------------------------------------------------

def _schemas():
    import pyarrow as pa

    strings = [pa.field(k, pa.string()) for k in ("kind", "where", "message", *_FIELDS)]
    read = pa.schema([*strings, pa.field("file", pa.int32())])
    ints = pa.list_(pa.int32())
    # per article: its sentences' spans and paragraphs; its sentences' token counts and then its title's,
    # and those tokens (qa.index.Columns); its text_key; its sentences' vectors, float32 bytes
    prepared = pa.schema([*read, pa.field("starts", ints), pa.field("ends", ints), pa.field("paragraphs", ints),
                          pa.field("lengths", ints), pa.field("tokens", pa.list_(pa.string())),
                          pa.field("key", pa.string()), pa.field("vectors", pa.binary())])
    return read, prepared


def _datasource(files: list[CorpusFile]):
    """A Ray Data datasource over corpus files: one read task per run of files of about BYTES_PER_READ,
    each file parsed by qa.articles.read_file, its problems kept in line with its articles as rows."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class Corpus(Datasource):  # defined here: Ray is imported only when used
        def __init__(self):
            super().__init__()
            # read tasks may run in another folder or on another node: absolute paths
            self.files = [dataclasses.replace(f, path=f.path.absolute()) for f in files]

        def get_name(self) -> str:
            return "Corpus"

        def estimate_inmemory_data_size(self) -> int:
            return sum(f.size for f in self.files)

        def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list:
            tasks, group, size = [], [], 0
            for i, f in enumerate(self.files):
                group.append((i, f))
                size += f.size
                if size >= BYTES_PER_READ or i == len(self.files) - 1:
                    meta = BlockMetadata(num_rows=None, size_bytes=size, exec_stats=None,
                                         input_files=[str(f.path) for _, f in group])
                    tasks.append(ReadTask(lambda g=tuple(group): read_rows(g), meta))
                    group, size = [], 0
            return tasks

    return Corpus()


def read_rows(group: tuple[tuple[int, CorpusFile], ...]):
    """Blocks of rows, articles and problems in the order the files report them."""
    import pyarrow as pa

    schema = _schemas()[0]
    rows: list[dict] = []
    empty = dict.fromkeys(_FIELDS, "")
    for i, f in group:
        def report(where: str, message: str, i=i) -> None:
            rows.append({**empty, "kind": PROBLEM, "where": where, "message": message, "file": i})

        for where, a in read_file(f, report):
            rows.append({**{k: getattr(a, k) for k in _FIELDS}, "kind": ARTICLE, "where": where, "message": "",
                         "file": i})
            if len(rows) >= ROWS_PER_BLOCK:
                yield pa.Table.from_pylist(rows, schema=schema)
                rows.clear()
    if rows:
        yield pa.Table.from_pylist(rows, schema=schema)


class Prepare:
    """The actor: splits, tokenizes and (given an encoder) embeds a batch of articles, but those the
    index holds as they are (known: qa.index.known_keys), which only get their text_key. The model
    comes once per actor, through the object store, so every actor embeds with the driver's very weights."""

    def __init__(self, splitter: Splitter, encoder, known=None):
        import ray

        self.splitter = splitter
        self.encoder: Encoder | None = ray.get(encoder) if isinstance(encoder, ray.ObjectRef) else encoder
        self.known = ray.get(known) if isinstance(known, ray.ObjectRef) else known
        if self.encoder is not None and ray.is_initialized() and ray.get_gpu_ids():
            self.encoder.model.to("cuda")
        self.schema = _schemas()[1]

    def __call__(self, batch):
        import pyarrow as pa

        new = {name: [] for name in ("starts", "ends", "paragraphs", "lengths", "tokens", "key")}
        texts, counts = [], []
        kinds = batch.column("kind").to_pylist()
        for j, row in enumerate(batch.select(["kind", *_FIELDS]).to_pylist()):
            known = row["kind"] == ARTICLE and self.known is not None and is_known(self.known, row["id"],
                                                                                   row["content_hash"])
            if row["kind"] != ARTICLE or known:
                for name in ("starts", "ends", "paragraphs", "lengths", "tokens"):
                    new[name].append([])
                new["key"].append(text_key(row["text"]) if known else "")  # the duplicate check needs it
                counts.append(0)
                if known:
                    kinds[j] = KNOWN
                continue
            article = Article(**{k: row[k] for k in _FIELDS})
            p = prepare(article, self.splitter)
            new["starts"].append([s.start for s in p.sentences])
            new["ends"].append([s.end for s in p.sentences])
            new["paragraphs"].append([s.paragraph for s in p.sentences])
            new["lengths"].append([*map(len, p.tokens), len(p.title_tokens)])
            new["tokens"].append([t for sentence in (*p.tokens, p.title_tokens) for t in sentence])
            new["key"].append(text_key(article.text))
            texts += [s.text for s in p.sentences]
            counts.append(len(p.sentences))
        vectors = [b""] * len(counts)
        if self.encoder is not None and texts:
            embedded = self.encoder.encode_documents(texts)
            ends = np.cumsum(counts)
            for j, (end, n) in enumerate(zip(ends, counts)):
                if n:
                    vectors[j] = np.ascontiguousarray(embedded[end - n:end], dtype=np.float32).tobytes()
        columns = {name: batch.column(name) for name in batch.column_names}  # the read rows pass through as they are
        columns.update(new, vectors=vectors, kind=kinds)
        return pa.table({f.name: pa.array(columns[f.name], type=f.type) if isinstance(columns[f.name], list)
                         else columns[f.name] for f in self.schema}, schema=self.schema)
