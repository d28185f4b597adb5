"""The build's embedding rate against the encoder's own, in one process, on the same sentences.

    .venv/bin/python bench/embed_rate.py ARTICLES.jsonl [N_ARTICLES]

Takes the first N_ARTICLES (default 400) of a JSONL export (e.g. a bench/synth.py archive file),
encodes their sentences with the default model alone, then builds a keyword-only index and an index
with the model from them; the model's share of the build is the difference. Two rounds, back to back.
"""
import sys, time, shutil, tempfile
from pathlib import Path
from qa.embed import load_encoder, DEFAULT_MODEL
from qa.index import build_index
from qa.sentences import load_splitter
from qa.articles import load_corpus
src = Path(sys.argv[1]); n_articles = int(sys.argv[2]) if len(sys.argv) > 2 else 400
tmp = Path(tempfile.mkdtemp())
rows = [l for _, l in zip(range(n_articles), open(src, encoding="utf-8"))]
(tmp / "c").mkdir(); (tmp / "c" / "a.jsonl").write_text("".join(rows), encoding="utf-8")
splitter = load_splitter()
texts = [s.text for a in load_corpus(tmp / "c").articles for s in splitter.split(a.id, a.text)]
enc = load_encoder(DEFAULT_MODEL)
enc.encode_documents(texts[:64], progress=False)  # warm up
out = {}
for rnd in range(2):
    t = time.perf_counter(); enc.encode_documents(texts, progress=False); alone = time.perf_counter() - t
    t = time.perf_counter(); build_index(tmp / "c", tmp / f"kw{rnd}", splitter, None, progress=False); kw = time.perf_counter() - t
    t = time.perf_counter(); build_index(tmp / "c", tmp / f"m{rnd}", splitter, enc, progress=False); model = time.perf_counter() - t
    print(f"round {rnd}: {len(texts)} sentences; encoder alone {len(texts)/alone:.0f}/s; build with model {model:.1f} s, keyword-only {kw:.1f} s; "
          f"build's embedding share {len(texts)/(model-kw):.0f}/s = {(alone)/(model-kw):.2f}x the encoder alone", flush=True)
shutil.rmtree(tmp)
