"""Serving an index from Ray actors: its segments spread over actors, each holding a qa.shard.Shard
of consecutive segments; a question fans out to all of them and qa.retrieve.Retriever merges the
answers exactly as it merges one process's segments.

An actor that dies is restarted by Ray (it reopens its segments from the index folder, which every
node must see at the same path: shared storage) and the calls it had not answered are sent again,
so questions keep being answered. Ray is imported through qa.distributed, only when used.
"""
from __future__ import annotations

import logging
import pickle
from pathlib import Path

from qa import distributed
from qa.shard import Shard

log = logging.getLogger(__name__)

# An actor that serves holds memory-mapped segments and waits on calls: it reserves no whole CPU,
# so a 2-CPU machine serves an index of any number of segments.
ACTOR_CPUS = 0.25


class Served:
    """A Ray actor holding a Shard. Its answers travel pickled: one bytes object crosses faster
    than Ray serializing the same nested tuples and dicts itself (about 0.6 ms less for a 35 KB
    answer on this machine, docs/deploy.md).

    whole: (the retriever's weights, own_model) when this actor holds every segment: it then also
    answers "search" with a qa.retrieve.Retriever of its own over its Shard, the same code as in
    one process, so a question costs one round trip instead of two or three. own_model: it loads
    the index's self-trained model from the generation, for query expansion's word neighbours (the
    driver still sends each question's vector)."""

    def __init__(self, gen: str, names: list[str], first: int, load_vectors: bool, whole=None):
        self.shard = Shard(gen, names, first, load_vectors)
        self.retriever = None
        if whole is not None:
            from qa import models
            from qa.index import Manifest
            from qa.retrieve import Local, Retriever
            weights, own_model = whole
            manifest = Manifest.read(Path(gen) / "manifest.json")
            encoder = None
            if own_model:  # loaded as the driver loads it, its weights checked against the index's
                encoder, why = models.for_index(manifest.model, manifest.model_path, Path(gen), Path(gen).parent,
                                                manifest.model_fingerprint)
                if encoder is None:
                    raise RuntimeError(f"this actor cannot load the index's model, which the driver loaded: {why}")
            self.retriever = Retriever(Path(gen), manifest, encoder, weights=weights, shards=Local([self.shard]),
                                       dense=load_vectors)

    def call(self, name: str, *args) -> bytes:
        if name == "search":
            return pickle.dumps(self.retriever.search_with(*args), protocol=pickle.HIGHEST_PROTOCOL)
        return pickle.dumps(getattr(self.shard, name)(*args), protocol=pickle.HIGHEST_PROTOCOL)


class Remote:
    """Shards in Ray actors: the same calls as qa.retrieve.Local, sent to every actor at once."""

    remote = True  # a call is a round trip: shards send the rows a search will need with their answers

    def __init__(self, actors: list, whole: bool = False):
        self.actors = actors
        self.whole = whole  # one actor holding every segment searches for the retriever (Served)
        self.ray = distributed._ray()

    def call(self, name: str, *args) -> list:
        return [pickle.loads(b) for b in self.ray.get([a.call.remote(name, *args) for a in self.actors])]

    def call_each(self, name: str, args: list[tuple | None]) -> list:
        refs = [None if x is None else a.call.remote(name, *x) for a, x in zip(self.actors, args)]
        got = iter(self.ray.get([r for r in refs if r is not None]))
        return [None if r is None else pickle.loads(next(got)) for r in refs]

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)


def spread(sizes: list[int], actors: int) -> list[range]:
    """Consecutive runs of segments, one per actor (at most one per segment), each near an equal
    share of the sentences."""
    actors = max(1, min(actors, len(sizes)))
    total, cuts, done, at = sum(sizes), [0], 0, 0
    for j in range(1, actors):
        while at < len(sizes) - (actors - j) and (at < cuts[-1] + 1 or done + sizes[at] / 2 <= total * j / actors):
            done += sizes[at]
            at += 1
        cuts.append(at)
    return [range(a, b) for a, b in zip(cuts, [*cuts[1:], len(sizes)])]


def serve(gen: Path, segments: list[dict], load_vectors: bool, where: str, actors: int | None = None,
          whole=None) -> Remote:
    """Actors holding the generation's segments (manifest entries), on the cluster at where
    (qa.distributed.connect); actors: how many (default: one per node of the cluster: on one
    machine one actor runs whole searches, the fastest there, docs/deploy.md), spread over the
    nodes so that each holds its share of the segments in its own memory. whole: (the retriever's
    weights, own_model) when one actor holding every segment may run whole searches (Served)."""
    distributed.connect(where)
    ray = distributed._ray()
    if actors is None:
        actors = max(1, sum(1 for node in ray.nodes() if node.get("Alive")))
    # no task events: they cost every call a share of a millisecond, for Ray's dashboard only
    actor = ray.remote(num_cpus=ACTOR_CPUS, max_restarts=-1, max_task_retries=-1, enable_task_events=False,
                       scheduling_strategy="SPREAD")(Served)
    runs = spread([int(s["sentences"]) for s in segments], actors)
    whole = whole if len(runs) == 1 else None
    handles = [actor.remote(str(gen), [segments[i]["name"] for i in run], run.start, load_vectors, whole)
               for run in runs]
    ray.get([h.call.remote("counts") for h in handles])  # every actor has opened its segments
    log.info("serving %d segments from %d Ray actors", len(segments), len(handles))
    return Remote(handles, whole is not None)
