"""Benchmark: the generate stage against provider-style rate limits, and its throughput with none.

    .venv/bin/python bench/generate_throughput.py                 # N=2000 per case (the target size)
    .venv/bin/python bench/generate_throughput.py --n 500 --case openai_rpm   # one case, quicker

Every case starts a fresh fake server (tests/fakes/server.py) as its own process, so its CPU is not
the client's, with 200 ms latency per answer. "Ours" is ``run_generate`` on a temporary task (the
whole stage: rendering, cache, records, manifest), with the default TeacherConfig: no limit in the
config, it is learnt from the headers and the 429s.

Cases (tests/fakes/ratelimit.py models the providers' documented limiters):
  no_limit          no limit, no rate-limit headers: throughput against the baseline.
  openai_rpm        OpenAI-style, 6,000 RPM (100/s, burst 100); 429s carry Retry-After and retry-after-ms.
  openai_rpm_no_ms  the same, without retry-after-ms.
  openai_tpm        OpenAI-style, 200,000 TPM (prompt + max_tokens 64 charged at admission), 30,000 RPM.
  openai_jitter     openai_rpm with +-50% latency jitter.
  anthropic         Anthropic-style headers (RFC 3339 resets, no retry-after-ms), 6,000 RPM, separate
                    input (2M) and output (400k) token limits; the anthropic backend.
  legacy            the earlier fake limiter: remaining in bucket units, retry-after-ms half the time.

The baseline is the official ``AsyncOpenAI`` on the same aiohttp transport with the same connection
pool as ours, its default 2 retries, ``asyncio.Semaphore(C)`` and ``asyncio.gather``, where C is the
most requests ours had in flight in the same case (so the ratio measures the scheduler, not the
transport). It runs in no_limit and openai_rpm.

Figures per run: requests/s over the whole run and over the request phase (first to last answer
served), 429s, prompts never answered, duplicate requests (answers served twice for one body), the
most requests in flight; for limited cases the fraction of the limit reached (requests/s, or
tokens charged per second for openai_tpm) over the whole run and over the request phase. Targets:
each limited case >= 95% of its limit (both ways), 429s < 1% of N, nothing unanswered, no
duplicate; no_limit: request-phase rate >= the baseline's.
Ends with ONE JSON line with every figure and a ``targets_met`` map.
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
# name: (server arguments, what binds: (dimension, per-second limit) or None, backend, max_tokens)
CASES: dict[str, tuple[list[str], tuple[str, float] | None, str, int]] = {
    "no_limit": ([], None, "openai", 16),
    "openai_rpm": (["--limiter", "openai", "--rpm", "6000"], ("requests", 100.0), "openai", 16),
    "openai_rpm_no_ms": (["--limiter", "openai", "--rpm", "6000", "--retry-after-ms-prob", "0"],
                         ("requests", 100.0), "openai", 16),
    "openai_tpm": (["--limiter", "openai", "--rpm", "30000", "--tpm", "200000"], ("tokens", 200_000 / 60), "openai", 64),
    "openai_jitter": (["--limiter", "openai", "--rpm", "6000", "--jitter", "0.5"], ("requests", 100.0), "openai", 16),
    "anthropic": (["--limiter", "anthropic", "--rpm", "6000", "--itpm", "2000000", "--otpm", "400000"],
                  ("requests", 100.0), "anthropic", 16),
    "legacy": (["--rate", "100", "--burst", "100", "--retry-after-ms-prob", "0.5"], ("requests", 100.0), "openai", 16),
}
BASELINE_CASES = ("no_limit", "openai_rpm")


class ServerProcess:
    def __init__(self, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.server", *args], cwd=REPO,
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"fake server failed to start: {line!r}")
        self.base = f"http://127.0.0.1:{int(line.split()[1])}"

    def stats(self) -> dict:
        with urllib.request.urlopen(self.base + "/_fake/stats") as resp:
            return json.loads(resp.read())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def prompts(n: int) -> list[dict]:
    return [{"text": f"Review number {i}: the film was fine, I suppose."} for i in range(n)]


def run_ours(base: str, n: int, workdir: Path, backend: str, max_tokens: int) -> tuple[float, int]:
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
    model, url = ("claude-haiku-4-5", base) if backend == "anthropic" else ("gpt-4o-mini", base + "/v1")
    (task_dir / "task.yaml").write_text(
        "name: bench\n"
        f"teacher: {{backend: {backend}, model: {model}, base_url: '{url}', params: {{max_tokens: {max_tokens}}}}}\n"
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


async def run_baseline(base: str, n: int, concurrency: int, max_tokens: int) -> tuple[float, int]:
    import httpx2
    from openai import AsyncOpenAI, DefaultAioHttpClient

    # The same transport and pool as ours (pipeline/teachers/openai_backend.py), the same concurrency.
    limits = httpx2.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8)
    client = AsyncOpenAI(base_url=base + "/v1", api_key="sk-" "bench-not-a-real-key",
                         http_client=DefaultAioHttpClient(limits=limits, timeout=60.0))
    sem = asyncio.Semaphore(concurrency)

    async def one(row: dict) -> bool:
        async with sem:
            try:
                await client.chat.completions.create(
                    model="gpt-4o-mini", max_tokens=max_tokens,
                    messages=[{"role": "user", "content": f"Classify: {row['text']}\n"}])
                return True
            except Exception:  # noqa: BLE001 — the baseline gave up on this prompt: it counts as unanswered
                return False

    start = time.perf_counter()
    results = await asyncio.gather(*(one(r) for r in prompts(n)))
    seconds = time.perf_counter() - start
    await client.close()
    return seconds, sum(results)


def measure(case: str, who: str, n: int, concurrency: int = 0) -> dict:
    server_args, binds, backend, max_tokens = CASES[case]
    server = ServerProcess("--latency", str(LATENCY_S), "--seed", "7", *server_args)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if who == "ours":
                seconds, answered = run_ours(server.base, n, Path(tmp), backend, max_tokens)
            else:
                seconds, answered = asyncio.run(run_baseline(server.base, n, concurrency, max_tokens))
        st = server.stats()
    finally:
        server.close()
    phase_s = (st["last_served"] - st["first_served"]) if st["first_served"] else 0.0
    row = {
        "req_per_s": round(answered / seconds, 1), "request_phase_req_per_s": round(answered / max(phase_s, 1e-9), 1),
        "seconds": round(seconds, 2), "answered": answered, "unanswered": n - answered, "n_429": st["n_429"],
        "frac_429_of_n": round(st["n_429"] / n, 4), "duplicates": st["duplicates"],
        "requests_received": st["n_received"], "max_in_flight": st["max_in_flight"],
    }
    if binds is not None:
        dim, per_s = binds
        used = answered if dim == "requests" else (st["charged"] or {}).get("tokens", 0.0)
        row["frac_of_limit"] = round(used / seconds / per_s, 3)
        # The request phase starts with the first answer: the probe's latency and the stage's
        # start-up and write-out are left out.
        row["request_phase_frac_of_limit"] = round(used / max(phase_s, 1e-9) / per_s, 3)
    print(f"  {case} {who:8s} " + "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return row


def main() -> None:
    # Library imports are not part of either client's run (the baseline imports before timing too).
    import anthropic  # noqa: F401 — seconds to import: not part of a run
    import httpcore2  # noqa: F401 — httpx2 imports it on the first client
    import openai  # noqa: F401

    import pipeline.stages.generate
    import pipeline.teachers.anthropic_backend
    import pipeline.teachers.openai_backend  # noqa: F401

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--case", choices=[*CASES, "all"], default="all")
    args = ap.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "sk-" "bench-not-a-real-key")
    os.environ.setdefault("ANTHROPIC_API_KEY", "sk-ant-" "bench-not-a-real-key")
    # The CPUs are shared: the load average says how much of them this run had.
    results: dict = {"n": args.n, "latency_s": LATENCY_S, "loadavg_1m_start": round(os.getloadavg()[0], 2)}
    checks: dict[str, bool] = {}
    for case in (CASES if args.case == "all" else [args.case]):
        print(f"case {case}: N={args.n}, {LATENCY_S * 1000:.0f} ms latency, server {' '.join(CASES[case][0]) or 'unlimited'}",
              flush=True)
        ours = measure(case, "ours", args.n)
        results[case] = {"ours": ours}
        if case in BASELINE_CASES:
            base = measure(case, "baseline", args.n, concurrency=max(1, ours["max_in_flight"]))
            results[case]["baseline"] = base
            results[case]["speedup_whole_run"] = round(ours["req_per_s"] / max(base["req_per_s"], 1e-9), 2)
            results[case]["speedup_request_phase"] = round(
                ours["request_phase_req_per_s"] / max(base["request_phase_req_per_s"], 1e-9), 2)
            print(f"  {case} ours / baseline: whole run {results[case]['speedup_whole_run']}x, "
                  f"request phase {results[case]['speedup_request_phase']}x", flush=True)
        if CASES[case][1] is None:
            checks[f"{case}_request_phase_ge_baseline"] = results[case].get("speedup_request_phase", 0) >= 1.0
        else:
            checks[f"{case}_limit_ge_0.95"] = ours["frac_of_limit"] >= 0.95
            checks[f"{case}_request_phase_limit_ge_0.95"] = ours["request_phase_frac_of_limit"] >= 0.95
            checks[f"{case}_429_lt_1pct"] = ours["n_429"] < 0.01 * args.n
        checks[f"{case}_none_unanswered"] = ours["unanswered"] == 0
        checks[f"{case}_zero_duplicates"] = ours["duplicates"] == 0
    results["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    results["targets_met"] = checks
    print(json.dumps(results))


if __name__ == "__main__":
    main()
