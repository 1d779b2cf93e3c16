"""Benchmark: the generate stage's throughput against a plain AsyncOpenAI + Semaphore(64) client.

    .venv/bin/python bench/generate_throughput.py            # N=2000 (the target size)
    .venv/bin/python bench/generate_throughput.py --n 500    # quicker, while developing

Both clients talk to the fake OpenAI server (tests/fakes/server.py), started as its own process
(so its CPU is not the client's) with 200 ms latency per answer; each client gets a fresh server.
  (A) no limit, no rate-limit headers.
  (B) the server enforces 6,000 requests/minute (100/s, burst 100) and answers 429 past it; its
      429s carry Retry-After in whole seconds, and retry-after-ms only half of the time. The limit
      is NOT in our config: it is learnt from the x-ratelimit-* headers and the 429s.
"This project" is ``run_generate`` on a temporary task (rendering, cache, records, manifest: the
whole run), with the default TeacherConfig. The baseline is ``AsyncOpenAI`` (its default 2
retries) with ``asyncio.Semaphore(64)`` and ``asyncio.gather``.

Figures per client and scenario: requests/s over the whole run, 429s provoked, prompts never
answered, duplicate requests (answers served twice for one request body); for B also the
fraction of the limit reached. Targets: A >= 1.2x the baseline; B >= 95% of the limit with < 1%
429s and no prompt unanswered; zero duplicates. Ends with ONE JSON line of all figures.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LATENCY_S = 0.2
LIMIT_RPS = 100.0


class ServerProcess:
    def __init__(self, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.server", *args], cwd=REPO,
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"fake server failed to start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url + "/_fake/stats") as resp:
            return json.loads(resp.read())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def server_args(scenario: str) -> list[str]:
    args = ["--latency", str(LATENCY_S), "--seed", "7"]
    if scenario == "B":
        args += ["--rate", str(LIMIT_RPS), "--burst", str(LIMIT_RPS), "--retry-after-ms-prob", "0.5"]
    return args


def prompts(n: int) -> list[dict]:
    return [{"text": f"Review number {i}: the film was fine, I suppose."} for i in range(n)]


def run_ours(url: str, n: int, workdir: Path) -> tuple[float, int]:
    """Whole run of the generate stage. Returns (seconds, prompts answered)."""
    from pipeline.config import load_task
    from pipeline.records import read_jsonl
    from pipeline.stages.generate import run_generate

    task_dir = workdir / "prompts" / "bench"
    task_dir.mkdir(parents=True)
    (task_dir / "user.j2").write_text("Classify: {{ text }}\n")
    with (task_dir / "inputs.jsonl").open("w") as fh:
        for row in prompts(n):
            fh.write(json.dumps(row) + "\n")
    (task_dir / "task.yaml").write_text(
        "name: bench\n"
        f"teacher: {{backend: openai, model: gpt-4o-mini, base_url: '{url}/v1', params: {{max_tokens: 16}}}}\n"
        "inputs: {source: {path: inputs.jsonl}}\noutput: {kind: text}\n"
    )
    os.environ["DISTILL_DATA_DIR"] = str(workdir / "data")
    start = time.perf_counter()
    try:
        run_generate(load_task(task_dir), quiet=True)
    except Exception as exc:  # noqa: BLE001 — report, don't crash the bench: unanswered prompts are a figure
        print(f"  ours stopped: {exc}", flush=True)
    seconds = time.perf_counter() - start
    out = workdir / "data" / "bench" / "generated" / "generated.jsonl"
    answered = sum(1 for _ in read_jsonl(out)) if out.exists() else 0
    return seconds, answered


async def run_baseline(url: str, n: int) -> tuple[float, int]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url + "/v1", api_key="sk-" "bench-not-a-real-key")
    sem = asyncio.Semaphore(64)

    async def one(row: dict) -> bool:
        async with sem:
            try:
                await client.chat.completions.create(
                    model="gpt-4o-mini", max_tokens=16,
                    messages=[{"role": "user", "content": f"Classify: {row['text']}"}])
                return True
            except Exception:  # noqa: BLE001 — the baseline gave up on this prompt: it counts as unanswered
                return False

    start = time.perf_counter()
    results = await asyncio.gather(*(one(r) for r in prompts(n)))
    seconds = time.perf_counter() - start
    await client.close()
    return seconds, sum(results)


def measure(name: str, scenario: str, n: int) -> dict:
    server = ServerProcess(*server_args(scenario))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if name == "ours":
                seconds, answered = run_ours(server.url, n, Path(tmp))
            else:
                seconds, answered = asyncio.run(run_baseline(server.url, n))
        st = server.stats()
    finally:
        server.close()
    rps = answered / seconds
    row = {
        "req_per_s": round(rps, 1), "seconds": round(seconds, 2), "answered": answered, "unanswered": n - answered,
        "n_429": st["n_429"], "frac_429": round(st["n_429"] / max(1, st["n_received"]), 4),
        "duplicates": st["duplicates"], "requests_received": st["n_received"],
    }
    if scenario == "B":
        row["frac_of_limit"] = round(rps / LIMIT_RPS, 3)
    print(f"  {scenario} {name:8s} " + "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return row


def main() -> None:
    # Library imports are not part of either client's run (the baseline imports before timing too).
    import openai  # noqa: F401

    import pipeline.stages.generate
    import pipeline.teachers.openai_backend  # noqa: F401

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--scenario", choices=["A", "B", "both"], default="both")
    args = ap.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "sk-" "bench-not-a-real-key")
    results: dict = {"n": args.n, "latency_s": LATENCY_S, "limit_rps": LIMIT_RPS}
    for scenario in (["A", "B"] if args.scenario == "both" else [args.scenario]):
        print(f"scenario {scenario}: N={args.n}, {LATENCY_S * 1000:.0f} ms latency"
              + (f", server limit {LIMIT_RPS:.0f}/s burst {LIMIT_RPS:.0f}" if scenario == "B" else ", no limit"), flush=True)
        ours = measure("ours", scenario, args.n)
        base = measure("baseline", scenario, args.n)
        results[scenario] = {"ours": ours, "baseline": base,
                             "speedup": round(ours["req_per_s"] / max(base["req_per_s"], 1e-9), 2)}
        print(f"  {scenario} speedup vs baseline: {results[scenario]['speedup']}x", flush=True)
    checks = {}
    if "A" in results:
        checks["A_speedup_ge_1.2"] = results["A"]["speedup"] >= 1.2
    if "B" in results:
        o = results["B"]["ours"]
        checks["B_limit_ge_0.95"] = o["frac_of_limit"] >= 0.95
        checks["B_429_lt_1pct"] = o["n_429"] < 0.01 * args.n
        checks["B_none_unanswered"] = o["unanswered"] == 0
    checks["zero_duplicates"] = all(results[s]["ours"]["duplicates"] == 0 for s in ("A", "B") if s in results)
    results["targets_met"] = checks
    print(json.dumps(results))


if __name__ == "__main__":
    main()
