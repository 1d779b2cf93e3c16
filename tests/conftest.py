"""Shared fixtures: tiny real models, temporary task folders, an isolated data root."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may fetch weights at run time
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def record_forward_shapes(monkeypatch, module) -> list:
    """Patch ``module.forward`` to append each call's input_ids shape to the returned list."""
    import functools

    calls: list = []
    original = module.forward

    @functools.wraps(original)  # keeps the signature the cache keyword is read from
    def counting(*a, **k):
        calls.append(k["input_ids"].shape)
        return original(*a, **k)

    monkeypatch.setattr(module, "forward", counting)
    return calls


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random 2-layer Llama with a freshly trained 512-token BPE tokenizer and a chat template."""
    from tests.tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_model_dir_4layers(tmp_path_factory) -> Path:
    """The same tokenizer with 4 layers: a 'teacher' to build half-depth students from."""
    from tests.tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny4") / "model", layers=4, seed=1)


@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    """Point DISTILL_DATA_DIR / DISTILL_MODELS_DIR at a temporary folder."""
    monkeypatch.setenv("DISTILL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DISTILL_MODELS_DIR", str(tmp_path / "models"))
    return tmp_path


@pytest.fixture
def task_copy(tmp_path):
    """Copy a bundled task folder into tmp_path so a test may edit it: ``task_copy('sentiment')``."""

    def _copy(name: str) -> Path:
        dst = tmp_path / "prompts" / name
        shutil.copytree(REPO / "prompts" / name, dst)
        return dst

    return _copy
