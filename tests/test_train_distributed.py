"""The train entry point under `accelerate launch`: two CPU processes (gloo), a tiny model, KD.

accelerate's `--cpu` launcher starts more than one process only through MPI (`--mpirun_hostfile`);
without MPI its torchrun launcher (`--multi_gpu`) on a machine with no visible GPU gives the same
two-rank CPU data parallelism (gloo), which the train stage selects when CUDA is absent."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.train_data import make_task, teacher_rows, write_version

CONFIGS = REPO / "pipeline" / "configs" / "accelerate"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_accelerate_launch_two_cpu_processes_trains_kd_and_writes_once(data_root, tiny_model_dir):
    write_version(data_root, "sentiment", teacher_rows(tiny_model_dir, n=8))
    task = make_task(data_root / "prompts" / "sentiment", REPO,
                     student={"init": "pretrained", "model": str(tiny_model_dir)},
                     train={"method": "kd", "sft": {"max_steps": 50, "per_device_train_batch_size": 2,
                                                    "save_strategy": "no", "max_length": 128}})
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           str(REPO / "scripts" / "03_train.py"), str(task), "--quiet", "--set", "max_steps=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, check=False, cwd=data_root, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    models = data_root / "models" / "sentiment"
    versions = [p for p in models.iterdir() if p.is_dir()]
    assert len(versions) == 1  # both ranks agreed on one model version folder
    manifest = json.loads((versions[0] / "train_manifest.json").read_text())
    assert manifest["params"]["world_size"] == 2 and manifest["kd_level"] == "token"
    assert (models / "latest").read_text().strip() == versions[0].name
    assert (versions[0] / "model.safetensors").exists()
    assert json.loads((versions[0] / "training_args.json").read_text())["max_steps"] == 2  # --set wins


@pytest.mark.parametrize("name", ["ddp", "fsdp", "deepspeed_zero3"])
def test_shipped_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert cfg.num_processes == 2 and cfg.distributed_type.value in {"MULTI_GPU", "FSDP", "DEEPSPEED"}
