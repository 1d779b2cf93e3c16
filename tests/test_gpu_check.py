"""GPU placement and `make gpu-check`, checked on the CPU: the device and dtype each model gets on
hardware described by its facts, that the teacher and the student load as placed, and the check
script's arguments and its --dry-run (the same steps on the CPU, ending with the JSON line)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.devices import GPU_FILL, Hardware, Placement, placement, placement_for, weight_bytes

REPO = Path(__file__).resolve().parent.parent
GIB = 1024 ** 3
H200 = Hardware(cuda=True, bf16=True, gpu_bytes=(141 * GIB,))


def test_without_cuda_every_model_stays_on_the_cpu_in_float32(tiny_model_dir):
    assert placement(Hardware(cuda=False)) == Placement("cpu", "float32", None)
    assert placement(Hardware(cuda=False), weight_bytes=10 ** 12) == Placement("cpu", "float32", None)
    assert placement_for(tiny_model_dir) == Placement("cpu", "float32", None)  # this machine has no GPU


def test_cuda_runs_in_bf16_where_supported_and_float32_where_not():
    assert placement(H200, 8 * GIB) == Placement("cuda", "bfloat16", None)
    v100 = Hardware(cuda=True, bf16=False, gpu_bytes=(32 * GIB,))
    assert placement(v100, 8 * GIB) == Placement("cuda", "float32", None)


def test_a_teacher_larger_than_one_gpu_is_spread_with_device_map_auto(tiny_model_dir):
    assert placement(H200, 140 * GIB).device_map == "auto"  # a 70B model in bf16
    assert placement(H200, int(GPU_FILL * 141 * GIB) - 1).device_map is None
    two_small = Hardware(cuda=True, bf16=True, gpu_bytes=(24 * GIB, 24 * GIB))
    assert placement(two_small, 30 * GIB) == Placement("cuda", "bfloat16", "auto")
    # the weights' size in the dtype they will run in: saved in float32, loaded in bf16 = half
    on_disk = sum(f.stat().st_size for f in tiny_model_dir.glob("*.safetensors"))
    assert weight_bytes(tiny_model_dir, "bfloat16") == on_disk // 2
    assert weight_bytes(tiny_model_dir, "float32") == on_disk
    tiny_gpu = Hardware(cuda=True, bf16=True, gpu_bytes=(on_disk // 4,))
    spread = placement_for(tiny_model_dir, tiny_gpu)
    assert spread.device_map == "auto" and spread.from_pretrained_kwargs()["device_map"] == "auto"
    model = object()
    assert spread.place(model) is model  # accelerate placed it already: no .to()


def test_the_hf_teacher_and_the_student_load_as_placed(tiny_model_dir, monkeypatch):
    import asyncio

    import torch

    from pipeline import devices
    from pipeline.config.teacher import TeacherConfig
    from pipeline.evaluation.student import load_student
    from pipeline.teachers.hf_backend import HFTeacher

    default_student, _ = load_student(tiny_model_dir)
    assert default_student.dtype == torch.float32 and default_student.device.type == "cpu"
    # what a bf16 GPU would get, short of the GPU itself
    monkeypatch.setattr(devices, "placement_for", lambda path, hw=None: Placement("cpu", "bfloat16"))
    student, _ = load_student(tiny_model_dir)
    assert student.dtype == torch.bfloat16
    teacher = HFTeacher(TeacherConfig(backend="hf", model=str(tiny_model_dir)))
    _, lm = teacher._load()
    assert lm.dtype == torch.bfloat16
    asyncio.run(teacher.aclose())


def _gpu_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), *args], capture_output=True,
                          text=True, cwd=REPO, env={**__import__("os").environ, "PYTHONPATH": str(REPO)}, check=False)


def test_gpu_check_refuses_bad_arguments_and_a_machine_without_cuda():
    from scripts.gpu_check import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--n", "4"])
    with pytest.raises(SystemExit):
        parse_args(["--steps", "0"])
    assert parse_args(["--dry-run", "--n", "8"]).method == "kd"
    proc = _gpu_check()
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == "gpu-check: no CUDA device here; run with --dry-run to check the plumbing on the CPU"


@pytest.fixture
def script_env(monkeypatch):
    """The script sets these for its own process; in-process, put them back after the test."""
    for name in ("DISTILL_DATA_DIR", "DISTILL_MODELS_DIR", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.setenv(name, "")


def test_gpu_check_dry_run_runs_every_step_on_the_cpu_and_ends_with_one_json_line(tiny_model_dir, tmp_path, capsys,
                                                                                   script_env):
    from scripts.gpu_check import main

    # --method sft: a random model's sampled tokens do not re-tokenize, so token-level KD refuses them
    # (the slow test below runs the KD path on the embedded SmolLM2); --vllm-python with an
    # interpreter that has no vLLM: the child's failure is reported in the line, not raised.
    rc = main(["--dry-run", "--model", str(tiny_model_dir), "--n", "8", "--steps", "1", "--max-tokens", "4",
               "--batch-size", "8", "--method", "sft", "--vllm-python", sys.executable, "--keep", str(tmp_path)])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["device"], out["dtype"], out["peak_gpu_mem_gib"]) == ("cpu", "float32", None)
    assert out["hf_teacher"]["requests"] == 8 and out["hf_teacher"]["tokens"] > 0
    assert out["train"]["steps"] == 1 and out["train"]["bf16"] is False and out["train"]["tokens"] > 0
    assert out["evaluate"]["device"] == "cpu" and out["evaluate"]["requests"] == out["curate"]["eval_rows"] > 0
    assert set(out["tokens_per_s"]) == {"hf_teacher", "train", "vllm_teacher"}
    assert set(out["requests_per_s"]) == {"hf_teacher", "student", "vllm_teacher"}
    assert "needs the vllm package" in out["vllm_teacher"]["error"]


@pytest.mark.slow
def test_gpu_check_dry_run_with_the_embedded_teacher_trains_token_level_kd(tmp_path, capsys, script_env):
    from scripts.gpu_check import main

    assert main(["--dry-run", "--n", "8", "--steps", "1", "--max-tokens", "8", "--batch-size", "8"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["train"]["kd_level"] == "token" and out["train"]["tokens"] > 0
