"""`make gpu-check`: every GPU path of the pipeline once, briefly; ends with ONE JSON line.

    python scripts/gpu_check.py                                   # needs CUDA (what make gpu-check runs)
    python scripts/gpu_check.py --vllm-python .venv-vllm-cuda/bin/python
    python scripts/gpu_check.py --dry-run --model PATH --n 16     # the same steps on the CPU: plumbing only

In a temporary data root (data/ and models/ are not touched), on a small text task whose teacher
and student share a tokenizer (so the KD is token-level, on the teacher's top-k logprobs):
  1. teacher   the hf backend answers --n prompts on the best device (bf16 on CUDA), top-5 logprobs
  2. curate    the answers into a dataset version
  3. train     --steps token-level KD steps (TRL: bf16 on CUDA; --method sft: plain SFT)
  4. evaluate  the student on the best device, on the held-out split
  5. vllm      with --vllm-python (the CUDA build of vLLM, in its own venv): the same prompts through
               the in-process vLLM teacher with top-5 logprobs, in a child process
Each step reports its wall time (model loading included), requests/s and tokens/s; the line ends
with the peak GPU memory (torch's peak allocation here; device memory in use in the vLLM child,
which reserves DISTILL_VLLM_ENGINE_ARGS' gpu_memory_utilization up front, 0.3 unless set).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TOPICS = ["a rainy harbour town", "a broken bicycle", "the first day of school", "a quiet library", "a mountain storm",
          "an old violin", "a crowded night market", "a lost cat", "a long train journey", "a summer garden",
          "a chess tournament", "a lighthouse keeper", "a city at dawn", "a burnt cake", "a winter forest",
          "a football final"]
STYLES = ["in one sentence", "as a headline", "for a child", "in a formal tone", "with a joke", "as a question",
          "in five words", "as a diary entry"]
GIB = 1024 ** 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct",
                    help="teacher model (a local folder or the embedded smollm2-135m-instruct); the student is "
                         "its every other layer")
    ap.add_argument("--n", type=int, default=128, help="prompts answered by each teacher (default 128)")
    ap.add_argument("--steps", type=int, default=10, help="KD training steps (default 10)")
    ap.add_argument("--max-tokens", type=int, default=48, help="tokens per teacher answer (default 48)")
    ap.add_argument("--batch-size", type=int, default=32, help="teacher and evaluation batch size (default 32)")
    ap.add_argument("--method", choices=("kd", "sft"), default="kd",
                    help="kd (default): token-level KD on the teacher's logprobs; sft: the same steps without "
                         "them (a random --dry-run model's sampled tokens do not re-tokenize, so it cannot do KD)")
    ap.add_argument("--vllm-python", metavar="PYTHON", help="the vLLM venv's python; without it the vLLM step is skipped")
    ap.add_argument("--dry-run", action="store_true", help="run on the CPU (no CUDA needed): the plumbing, not the speed")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary folder, removed)")
    ap.add_argument("--vllm-step", metavar="TASK_DIR", help=argparse.SUPPRESS)  # the child's entry point
    args = ap.parse_args(argv)
    for name in ("n", "steps", "max_tokens", "batch_size"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least 1")
    if args.n < 8:
        ap.error(f"--n {args.n}: must be at least 8 (a quarter is held out for evaluation)")
    return args


def prompts(n: int) -> list[dict]:
    """n distinct inputs (topics x styles, then numbered), so dedupe keeps them all."""
    out = [{"text": f"Describe {t} {s}."} for s in STYLES for t in TOPICS]
    out += [{"text": f"Describe scene number {i} {STYLES[i % len(STYLES)]}."} for i in range(max(0, n - len(out)))]
    return out[:n]


def task_config(model: str, args: argparse.Namespace, backend: str = "hf") -> dict:
    return {
        "name": "gpucheck",
        "description": "make gpu-check: a short text task run on every GPU path.",
        # vLLM schedules its own batches: hand it every prompt at once
        "teacher": {"backend": backend, "model": model, "top_logprobs": 5,
                    "batch_size": args.n if backend == "vllm" else args.batch_size,
                    # sampled, so that even a random --dry-run model writes words, not whitespace
                    "params": {"temperature": 1.0, "seed": 0, "max_tokens": args.max_tokens}},
        "inputs": {"source": {"path": "inputs.jsonl"}},
        "output": {"kind": "text"},
        "filters": {"drop_truncated": False},  # an answer cut at max_tokens is still an answer here
        "split": {"eval_fraction": 0.25},
        "student": {"init": "from_teacher_layers", "teacher_model": model},
        "train": {"method": args.method, "kd_level": "token" if args.method == "kd" else "auto",
                  "temperature": 2.0, "alpha": 0.5,
                  "sft": {"max_steps": args.steps, "per_device_train_batch_size": 8, "logging_steps": 1,
                          "save_strategy": "no", "max_length": 256, "seed": 0}},
        "eval": {"batch_size": args.batch_size, "latency_samples": 4, "max_new_tokens": args.max_tokens,
                 "student_price_per_hour": 1.0, "teacher_price_per_hour": 1.0},
    }


def write_task(folder: Path, config: dict, inputs: list[dict]) -> Path:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "task.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    (folder / "user.j2").write_text("{{ text }}", encoding="utf-8")
    (folder / "inputs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in inputs), encoding="utf-8")
    return folder


def rates(requests: int, tokens: int, wall_s: float) -> dict:
    return {"wall_s": round(wall_s, 2), "requests": requests, "tokens": tokens,
            "requests_per_s": round(requests / wall_s, 2) if wall_s > 0 else None,
            "tokens_per_s": round(tokens / wall_s, 1) if wall_s > 0 else None}


def teacher_figures(manifest: dict, wall_s: float) -> dict:
    """Rates from a generate manifest: answers and their completion tokens over the step's wall time."""
    return rates(manifest["counts"]["new"], manifest["tokens"]["completion"], wall_s)


def train_figures(model_dir: Path, wall_s: float) -> dict:
    """Tokens trained on (TRL's ``num_tokens``) over the training loop's runtime, and the precision used."""
    metrics = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
    logged = [h["num_tokens"] for h in metrics.get("log_history", []) if "num_tokens" in h]
    runtime = float(metrics.get("final", {}).get("train_runtime") or wall_s)
    args = json.loads((model_dir / "training_args.json").read_text(encoding="utf-8"))
    out = rates(int(args["max_steps"]), int(max(logged)) if logged else 0, runtime)
    out.update(steps=out.pop("requests"), steps_per_s=out.pop("requests_per_s"), bf16=bool(args.get("bf16")),
               step_wall_s=round(wall_s, 2))
    return out


def evaluate_figures(report: dict, wall_s: float) -> dict:
    """The student's batched requests/s as evaluate measured them (its generation alone), and the step's."""
    n = report["counts"]["inputs"]
    return {"wall_s": round(wall_s, 2), "requests": n, "requests_per_s": round(n / wall_s, 2) if wall_s > 0 else None,
            "student_requests_per_s": round(report["throughput"]["student_rps"] or 0, 2),
            "student_latency_p50_s": report["latency"]["student"].get("p50_s")}


class GpuMemory:
    """torch's peak allocation on the GPU, per step and overall (None on the CPU)."""

    def __init__(self, cuda: bool):
        self.cuda, self.peak = cuda, 0

    def step(self) -> float | None:
        if not self.cuda:
            return None
        import torch

        torch.cuda.synchronize()
        used = torch.cuda.max_memory_allocated()
        self.peak = max(self.peak, used)
        torch.cuda.reset_peak_memory_stats()
        return round(used / GIB, 3)


def run_vllm_child(python: str, task_dir: Path, root: Path) -> dict:
    """The vLLM step in its own interpreter (vLLM pins its own torch); returns its JSON line."""
    env = {**os.environ, "DISTILL_DATA_DIR": str(root / "vllm-data"), "PYTHONPATH": str(Path(__file__).parent.parent)}
    env.setdefault("DISTILL_VLLM_ENGINE_ARGS", json.dumps({"gpu_memory_utilization": 0.3}))
    proc = subprocess.run([python, __file__, "--vllm-step", str(task_dir)], env=env, capture_output=True, text=True,
                          check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def vllm_step(task_dir: Path) -> dict:
    """In the vLLM venv: generate with the in-process vLLM teacher; one JSON line of its figures."""
    from pipeline.config.task import load_task
    from pipeline.stages.generate import run_generate

    t0 = time.perf_counter()
    manifest = run_generate(load_task(task_dir), quiet=True)
    out = teacher_figures(manifest, time.perf_counter() - t0)
    try:
        import torch

        if torch.cuda.is_available():  # vLLM's engine may run in its own process: read the device, not torch
            free, total = torch.cuda.mem_get_info()
            out["gpu_mem_in_use_gib"] = round((total - free) / GIB, 3)
    except ImportError:
        pass
    return out


def run_check(args: argparse.Namespace, root: Path) -> dict:
    from pipeline.config.task import load_task
    from pipeline.devices import hardware, placement_for
    from pipeline.local_models import resolve_model_path
    from pipeline.stages.curate import run_curate
    from pipeline.stages.evaluate import run_evaluate
    from pipeline.stages.generate import run_generate
    from pipeline.stages.train import run_train

    hw = hardware()
    os.environ["DISTILL_DATA_DIR"], os.environ["DISTILL_MODELS_DIR"] = str(root / "data"), str(root / "models")
    model = str(resolve_model_path(args.model))
    inputs = prompts(args.n)
    task_dir = write_task(root / "prompts" / "gpucheck", task_config(model, args), inputs)
    task = load_task(task_dir)
    mem = GpuMemory(hw.cuda)
    teacher_at = placement_for(model, hw)
    out: dict = {"check": "gpu", "dry_run": args.dry_run, "device": teacher_at.device, "dtype": teacher_at.dtype,
                 "gpus": len(hw.gpu_bytes), "model": args.model}

    t0 = time.perf_counter()
    out["hf_teacher"] = {**teacher_figures(run_generate(task, quiet=True), time.perf_counter() - t0),
                         "device_map": teacher_at.device_map, "peak_gpu_mem_gib": mem.step()}
    t0 = time.perf_counter()
    version = run_curate(task, quiet=True)
    out["curate"] = {"wall_s": round(time.perf_counter() - t0, 2), "train_rows": version["counts"]["train"],
                     "eval_rows": version["counts"]["eval"]}
    t0 = time.perf_counter()
    trained = run_train(task, quiet=True)
    model_dir = Path(trained["output_dir"])
    out["train"] = {**train_figures(model_dir, time.perf_counter() - t0), "kd_level": trained["kd_level"],
                    "peak_gpu_mem_gib": mem.step()}
    t0 = time.perf_counter()
    report = run_evaluate(task, quiet=True)
    student_at = placement_for(model_dir, hw)
    out["evaluate"] = {**evaluate_figures(report, time.perf_counter() - t0), "device": student_at.device,
                       "dtype": student_at.dtype, "peak_gpu_mem_gib": mem.step()}
    out["vllm_teacher"] = None
    if args.vllm_python:
        vdir = write_task(root / "prompts-vllm" / "gpucheck", task_config(model, args, backend="vllm"), inputs)
        out["vllm_teacher"] = run_vllm_child(args.vllm_python, vdir, root)
    vllm_mem = (out["vllm_teacher"] or {}).get("gpu_mem_in_use_gib")
    out["peak_gpu_mem_gib"] = None if not hw.cuda else max(round(mem.peak / GIB, 3), vllm_mem or 0)
    out["tokens_per_s"] = {"hf_teacher": out["hf_teacher"]["tokens_per_s"], "train": out["train"]["tokens_per_s"],
                           "vllm_teacher": (out["vllm_teacher"] or {}).get("tokens_per_s")}
    out["requests_per_s"] = {"hf_teacher": out["hf_teacher"]["requests_per_s"],
                             "student": out["evaluate"]["student_requests_per_s"],
                             "vllm_teacher": (out["vllm_teacher"] or {}).get("requests_per_s")}
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pipeline.devices import hardware
    from pipeline.errors import DistillError

    if args.vllm_step:
        try:
            print(json.dumps(vllm_step(Path(args.vllm_step))))
        except DistillError as err:
            print(f"gpu-check: vllm step: {err}", file=sys.stderr)
            return 2
        return 0

    if not args.dry_run and not hardware().cuda:
        print("gpu-check: no CUDA device here; run with --dry-run to check the plumbing on the CPU", file=sys.stderr)
        return 1
    if args.dry_run:  # the CPU path, whatever the machine has: hide any GPU from torch
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        out = run_check(args, work)
    except DistillError as err:
        print(f"gpu-check: {err}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
