"""Soak test of `qa serve`: many sessions asking at once, uploads meanwhile; prints server RSS over time.

    .venv/bin/python bench/soak.py [--sessions 20] [--questions 50] [--uploads 2] [--model NAME]

Serves a copy of corpus/ (uploads land in the copy) on a free port of 127.0.0.1. Each session is
its own gradio_client Client (its own server-side state) and asks, over and over, a question and
then a follow-up that only makes sense with it ("When did that happen?"). A follow-up whose answer
is not read with the session's own previous question, or equals another topic's follow-up answer
(as asked alone), is a mixed-up answer. Exits 1 on any error, any mixed-up answer, or RSS growing more than
--max-growth MB between the first 100 questions and the end.
"""
from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gradio_client import Client, handle_file

ROOT = Path(__file__).resolve().parents[1]
# (question, follow-up): the default corpus answers both, and each follow-up differently.
TOPICS = (
    ("Which school was hit with cluster munitions?", "When did that happen?"),
    ("How many civilians were killed near the hospital?", "Where was it?"),
    ("Who is Amnesty's regional director?", "What did she say?"),
    ("What is the Amnesty report based on?", "How many attacks did it document?"),
)
UPLOAD = ("title: Harbour {n}\nsource: Soak Wire\npublished: 2021-03-0{n}\n\n"
          "The harbour of Port Soak{n} froze for {n}{n} days in March. Ferries to the island stopped.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def message_text(message: dict) -> str:
    content = message["content"]  # a string, or Gradio 6's [{"type": "text", "text": ...}]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


def answer_text(chat: list[dict]) -> str:
    """The last answer, with the session's own turn numbers taken out of its anchors."""
    return re.sub(r"(src|near|turn)-\d+", r"\1-N", message_text(chat[-1]))


class Soak:
    def __init__(self, url: str, server_pid: int, questions: int):
        self.url, self.pid, self.questions = url, server_pid, questions
        self.done = 0
        self.errors: list[str] = []
        self.mixed: list[str] = []
        self.rss: list[tuple[float, int, float]] = []  # (seconds, questions answered, MB)
        self.expected: dict[str, str] = {}
        self.lock = threading.Lock()
        self.t0 = time.monotonic()

    def sample(self) -> None:
        with self.lock:
            self.rss.append((time.monotonic() - self.t0, self.done, rss_mb(self.pid)))

    def ask(self, client: Client, question: str, chat: list) -> list:
        _, chat = client.predict(question, chat, [], "", "", api_name="/on_ask")
        with self.lock:
            self.done += 1
            if self.done % 100 == 0:
                self.rss.append((time.monotonic() - self.t0, self.done, rss_mb(self.pid)))
        if "Something went wrong" in message_text(chat[-1]):
            raise RuntimeError(f"the server failed on {question!r}")
        return chat

    def reference(self) -> None:
        """Each follow-up's answer in a session of its own, asked one at a time."""
        for question, follow_up in TOPICS:
            client = Client(self.url, verbose=False)
            chat = self.ask(client, follow_up, self.ask(client, question, []))
            self.expected[question] = answer_text(chat)
            client.close()

    def session(self, n: int) -> None:
        try:
            client = Client(self.url, verbose=False)
            chat: list = []
            for i in range(self.questions // 2):
                question, follow_up = TOPICS[(n + i) % len(TOPICS)]
                chat = self.ask(client, follow_up, self.ask(client, question, chat))
                got = answer_text(chat)
                # Its own earlier question, and not another topic's answer (answers may change a little
                # once the uploads are in: they change the keyword statistics).
                others = {a for q, a in self.expected.items() if q != question} - {self.expected[question]}
                if f"“{question}”" not in got or got in others:
                    with self.lock:
                        self.mixed.append(f"session {n}, {follow_up!r} after {question!r}: {got[:300]!r}; "
                                          f"alone: {self.expected[question][:300]!r}")
            client.close()
        except Exception as e:  # counted and shown; the soak goes on with the other sessions
            with self.lock:
                self.errors.append(f"session {n}: {type(e).__name__}: {e}")

    def upload(self, n: int, folder: Path) -> None:
        try:
            path = folder / f"harbour{n}.txt"
            path.write_text(UPLOAD.format(n=n), encoding="utf-8")
            client = Client(self.url, verbose=False)
            status, header, _ = client.predict([handle_file(str(path))], api_name="/on_upload")
            if "Added" not in status or f"<b>{2 + n}</b> articles" not in header:
                raise RuntimeError(f"{status} / {header[:200]}")
            _, chat = client.predict(f"How many days did the harbour of Port Soak{n} freeze?", [], [], "", "",
                                     api_name="/on_ask")
            answered = f"Soak{n} froze" in message_text(chat[-1])
            print(f"upload {n}: {status.strip()} The header counts it; asked about it, the chat "
                  f"{'quotes it' if answered else 'abstains'}.", flush=True)
        except Exception as e:
            with self.lock:
                self.errors.append(f"upload {n}: {type(e).__name__}: {e}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--questions", type=int, default=50, help="per session (half of them follow-ups)")
    p.add_argument("--uploads", type=int, default=2)
    p.add_argument("--model", help="passed to qa serve (default: the project's default)")
    p.add_argument("--max-growth", type=float, default=100.0, help="MB allowed between question 100 and the end")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    shutil.copytree(ROOT / "corpus", work / "corpus")
    port = free_port()
    command = [sys.executable, "-m", "qa.cli", "serve", "--corpus", str(work / "corpus"), "--index",
               str(work / "index"), "--port", str(port), *(["--model", args.model] if args.model else [])]
    log = open(work / "server.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(600):
            try:
                Client(url, verbose=False).close()
                break
            except Exception:  # not up yet
                if server.poll() is not None:
                    raise SystemExit(f"qa serve exited with {server.returncode}; see {work / 'server.log'}")
                time.sleep(1)
        soak = Soak(url, server.pid, args.questions)
        soak.sample()
        soak.reference()
        print(f"server up (pid {server.pid}, {rss_mb(server.pid):.0f} MB); {args.sessions} sessions x "
              f"{args.questions} questions, {args.uploads} uploads", flush=True)
        stop = threading.Event()

        def sampler():
            while not stop.wait(5):
                soak.sample()
        threading.Thread(target=sampler, daemon=True).start()
        t0 = time.monotonic()
        with ThreadPoolExecutor(args.sessions + args.uploads) as pool:
            jobs = [pool.submit(soak.session, n) for n in range(args.sessions)]
            for n in range(1, args.uploads + 1):
                time.sleep(20)
                jobs.append(pool.submit(soak.upload, n, work))
            for job in jobs:
                job.result()
        stop.set()
        seconds = time.monotonic() - t0
        soak.sample()
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    print("\n  seconds  questions  server RSS (MB)")
    for t, done, mb in soak.rss:
        print(f"  {t:7.0f}  {done:9d}  {mb:15.0f}")
    at_100 = next((mb for _, done, mb in soak.rss if done >= 100), soak.rss[0][2])
    growth = soak.rss[-1][2] - at_100
    print(f"\n{soak.done} questions in {seconds:.0f} s ({soak.done / seconds:.1f}/s); errors {len(soak.errors)}; "
          f"mixed-up answers {len(soak.mixed)}; RSS after 100 questions {at_100:.0f} MB, at the end "
          f"{soak.rss[-1][2]:.0f} MB ({growth:+.0f} MB)")
    for line in (soak.errors + soak.mixed)[:10]:
        print("  " + line)
    ok = not soak.errors and not soak.mixed and growth <= args.max_growth
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"server log and corpus kept in {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
