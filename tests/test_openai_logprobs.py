"""The openai backend's logprobs against self-hosted servers' quirks (vLLM)."""
from __future__ import annotations

from pipeline.config.teacher import TeacherConfig
from pipeline.records import Message
from pipeline.teachers.base import make_request
from pipeline.teachers.openai_backend import OpenAITeacher, parse_logprobs


def test_candidates_are_sorted_and_cut_to_k():
    # vLLM lists the sampled token first even when it is not among the top k
    content = [{"token": "b", "logprob": -3.0, "bytes": [98],
                "top_logprobs": [{"token": "b", "logprob": -3.0}, {"token": "a", "logprob": -0.1},
                                 {"token": "c", "logprob": -1.0}]}]
    (pos,) = parse_logprobs(content, k=2)
    assert [t.token for t in pos.top] == ["a", "c"]


def test_vllm_token_ids_are_parsed():
    content = [{"token": "token_id:42", "logprob": -0.5, "bytes": [104, 105], "top_logprobs": []}]
    (pos,) = parse_logprobs(content)
    assert pos.id == 42 and pos.token == "hi"


def test_self_hosted_server_is_asked_for_one_more_candidate(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-" "test-0123456789abcdef")
    req, _ = make_request("openai", "m", [Message(role="user", content="x")], {}, top_logprobs=5)
    hosted = OpenAITeacher(TeacherConfig(backend="openai", model="m"))
    assert hosted.body(req)["top_logprobs"] == 5
    local = OpenAITeacher(TeacherConfig(backend="openai", model="m", base_url="http://127.0.0.1:1/v1"))
    assert local.body(req)["top_logprobs"] == 6
