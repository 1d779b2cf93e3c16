"""The embedded ``hf`` teacher, on a tiny random Llama (and, marked slow, the real SmolLM2)."""
from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from pipeline.config.teacher import TeacherConfig
from pipeline.errors import ConfigError, TeacherError
from pipeline.records import Message
from pipeline.teachers.base import make_request

PROMPTS = [
    "Classify the sentiment of the review.",
    "This movie was great and I loved the acting.",
    "A dull, boring film with a terrible plot. Answer with one word: positive or negative.",
    "Summarize the text in one sentence.",
    "The ticket says my order 12345 arrived broken; please refund me.",
]


def teacher_for(model_dir, *, params=None, top_logprobs=None, batch_size=16):
    from pipeline.teachers.hf_backend import HFTeacher

    cfg = TeacherConfig(backend="hf", model=str(model_dir), params=params or {"temperature": 0.0, "max_tokens": 6},
                        top_logprobs=top_logprobs, batch_size=batch_size)
    return HFTeacher(cfg)


def requests_for(teacher, prompts, params=None, top_logprobs=None):
    params = params if params is not None else teacher.cfg.params
    return [make_request("hf", teacher.model, [Message(role="system", content="You are a helpful assistant."),
                                               Message(role="user", content=p)], params, top_logprobs)[0]
            for p in prompts]


def run(coro):
    return asyncio.run(coro)


def test_batch_answers_each_request_in_order_across_chunks_and_param_groups(tiny_model_dir):
    teacher = teacher_for(tiny_model_dir, batch_size=2, top_logprobs=3)
    short = {"temperature": 0.0, "max_tokens": 3}
    growing = [" ".join(["great movie"] * n) for n in range(1, 7)]  # each prompt a different length
    reqs = requests_for(teacher, growing[:2] + growing[3:], top_logprobs=3)
    reqs.insert(2, requests_for(teacher, growing[2:3], params=short, top_logprobs=3)[0])
    batched = run(teacher.complete_batch(reqs))
    assert len(batched) == len(reqs)
    solo = [run(teacher.complete(r)) for r in reqs]
    # each answer belongs to its own prompt: prompt lengths differ, and the answer matches a solo
    # (unpadded) run of the same prompt, down to its first-token distribution
    assert [b.usage.prompt_tokens for b in batched] == [s.usage.prompt_tokens for s in solo]
    assert len({b.usage.prompt_tokens for b in batched}) == len(reqs)
    assert [b.text for b in batched] == [s.text for s in solo]
    for b, s in zip(batched, solo):
        assert [c.id for c in b.logprobs[0].top] == [c.id for c in s.logprobs[0].top]
        assert [c.logprob for c in b.logprobs[0].top] == pytest.approx([c.logprob for c in s.logprobs[0].top],
                                                                        abs=1e-4)
    assert batched[2].usage.completion_tokens == 3 < batched[3].usage.completion_tokens


def test_logprobs_are_sorted_top_k_and_match_a_separate_forward_pass(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    teacher = teacher_for(tiny_model_dir, top_logprobs=5)
    req = requests_for(teacher, PROMPTS[:1], top_logprobs=5)[0]
    resp = run(teacher.complete(req))
    assert resp.logprobs and len(resp.logprobs) == resp.usage.completion_tokens == 6

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompt = tok.apply_chat_template([m.model_dump() for m in req.messages], tokenize=False,
                                     add_generation_prompt=True)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    ids = [p.id for p in resp.logprobs]
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + ids])).logits[0]
    expected = torch.log_softmax(logits.float(), dim=-1)[len(prompt_ids) - 1:-1]
    for step, pos in enumerate(resp.logprobs):
        values = [c.logprob for c in pos.top]
        assert len(pos.top) == 5 and values == sorted(values, reverse=True)
        assert pos.top[0].id == pos.id  # greedy picks the most likely token
        assert pos.logprob == pytest.approx(expected[step, pos.id].item(), abs=1e-4)
        for cand in pos.top:
            assert cand.logprob == pytest.approx(expected[step, cand.id].item(), abs=1e-4)
            assert cand.token == tok.decode([cand.id])


# Sampling a random model gives varied tokens, including half UTF-8 characters.
SAMPLED = {"temperature": 1.0, "max_tokens": 12, "seed": 1}


def test_token_ids_and_bytes_reassemble_the_completion(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    teacher = teacher_for(tiny_model_dir, params=SAMPLED, top_logprobs=0)
    for resp in run(teacher.complete_batch(requests_for(teacher, PROMPTS, top_logprobs=0))):
        ids = [p.id for p in resp.logprobs]
        assert len(set(ids)) > 3
        assert tok.decode(ids, skip_special_tokens=True) == resp.text
        assert b"".join(bytes(p.bytes) for p in resp.logprobs).decode("utf-8", errors="replace") == resp.text
        assert all(p.top == [] for p in resp.logprobs)  # top_logprobs=0: chosen token only, as in OpenAI


def test_no_logprobs_requested_means_none_stored(tiny_model_dir):
    teacher = teacher_for(tiny_model_dir)
    assert run(teacher.complete(requests_for(teacher, PROMPTS[:1])[0])).logprobs is None


def test_finish_reason_is_length_at_max_tokens_and_stop_at_an_eos_token(tiny_model_dir, tmp_path):
    teacher = teacher_for(tiny_model_dir, params={"temperature": 0.0, "max_tokens": 8}, top_logprobs=1)
    first = run(teacher.complete(requests_for(teacher, PROMPTS[:1], top_logprobs=1)[0]))
    assert first.finish_reason == "length" and first.usage.completion_tokens == 8

    # A model whose generation config names a token of the greedy answer as an end token (as Llama 3 lists
    # several): the answer ends there, without it, and the EOS still counts as generated.
    model_dir = tmp_path / "eos_model"
    shutil.copytree(tiny_model_dir, model_dir)
    gen_path = model_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text())
    ids = [p.id for p in first.logprobs]
    # the first token not seen before it (a random model often repeats one token); else the first
    cut = next((j for j in range(1, len(ids)) if ids[j] not in ids[:j]), 0)
    gen["eos_token_id"] = [gen.get("eos_token_id"), ids[cut]]
    gen_path.write_text(json.dumps(gen))
    ended = run(teacher_for(model_dir, params={"temperature": 0.0, "max_tokens": 8}, top_logprobs=1)
                .complete(requests_for(teacher, PROMPTS[:1], top_logprobs=1)[0]))
    assert ended.finish_reason == "stop"
    assert [p.id for p in ended.logprobs] == ids[:cut]
    assert ended.usage.completion_tokens == cut + 1


def test_stop_string_cuts_the_answer_before_it(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    teacher = teacher_for(tiny_model_dir, params=SAMPLED, top_logprobs=2)
    free = run(teacher.complete(requests_for(teacher, PROMPTS[1:2], top_logprobs=2)[0]))
    tokens = [p.token for p in free.logprobs]
    # a plain visible token from inside the free answer that does not occur earlier in it
    stop = next(t for j, t in enumerate(tokens) if j > 0 and t.strip() and "\ufffd" not in t
                and free.text.find(t) == len(tok.decode([p.id for p in free.logprobs[:j]])))
    # same seed, so the same tokens are sampled until the stop string appears
    cut = run(teacher.complete(requests_for(teacher, PROMPTS[1:2], params={**SAMPLED, "stop": [stop]},
                                            top_logprobs=2)[0]))
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[:free.text.find(stop)]
    assert tok.decode([p.id for p in cut.logprobs]) == cut.text


def test_greedy_is_deterministic_and_a_seed_makes_sampling_repeatable(tiny_model_dir):
    teacher = teacher_for(tiny_model_dir, params={"temperature": 0.0, "max_tokens": 8}, top_logprobs=3)
    reqs = requests_for(teacher, PROMPTS, top_logprobs=3)
    a, b = run(teacher.complete_batch(reqs)), run(teacher.complete_batch(reqs))
    assert [r.model_dump(exclude={"latency_s"}) for r in a] == [r.model_dump(exclude={"latency_s"}) for r in b]

    hot = {"temperature": 1.0, "top_p": 0.9, "max_tokens": 12, "seed": 7}
    reqs = requests_for(teacher, PROMPTS[:2], params=hot)
    s1, s2 = run(teacher.complete_batch(reqs)), run(teacher.complete_batch(reqs))
    assert [r.text for r in s1] == [r.text for r in s2]
    other = requests_for(teacher, PROMPTS[:2], params={**hot, "seed": 8})
    assert [r.text for r in run(teacher.complete_batch(other))] != [r.text for r in s1]


def test_generation_runs_off_the_event_loop(tiny_model_dir):
    teacher = teacher_for(tiny_model_dir, params={"temperature": 0.0, "max_tokens": 40})
    reqs = requests_for(teacher, PROMPTS)

    async def main():
        ticks = 0
        done = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        await teacher.complete_batch(reqs[:1])  # includes loading the model
        await teacher.complete_batch(reqs)
        done.set()
        await task
        return ticks

    assert run(main()) > 20


def test_unsupported_sampling_parameter_is_a_config_error(tiny_model_dir):
    with pytest.raises(ConfigError, match=r"teacher\.params\.presence_penalty: not supported"):
        teacher_for(tiny_model_dir, params={"presence_penalty": 0.5})


def test_prompt_longer_than_the_context_is_a_clear_teacher_error(tiny_model_dir):
    teacher = teacher_for(tiny_model_dir, params={"temperature": 0.0, "max_tokens": 500})
    with pytest.raises(TeacherError, match="exceeds its context of 512"):
        run(teacher.complete(requests_for(teacher, PROMPTS[:1])[0]))


def test_make_teacher_picks_the_hf_backend(tiny_model_dir):
    from pipeline.teachers import make_teacher
    from pipeline.teachers.hf_backend import HFTeacher

    teacher = make_teacher(TeacherConfig(backend="hf", model=str(tiny_model_dir)))
    assert isinstance(teacher, HFTeacher) and teacher.backend == "hf"
    run(teacher.aclose())


@pytest.mark.slow
def test_real_smollm2_is_converted_once_and_answers_sensibly(tmp_path, monkeypatch):
    from pipeline import local_models

    monkeypatch.setenv("DISTILL_CACHE_DIR", str(tmp_path / "cache"))
    folder = local_models.resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert folder == tmp_path / "cache" / "smollm2-135m-instruct"
    assert (folder / "model.safetensors").is_file() and (folder / "chat_template.jinja").is_file()
    teacher = teacher_for("smollm2-135m-instruct", params={"temperature": 0.0, "max_tokens": 12}, top_logprobs=3)
    resp = run(teacher.complete(requests_for(teacher, ["What is the capital of France?"], top_logprobs=3)[0]))
    assert "Paris" in resp.text and resp.finish_reason == "stop"
    assert resp.logprobs[0].top[0].logprob > -3  # a confident first token, not noise


def test_running_out_of_memory_says_to_lower_the_batch_size(tiny_model_dir):
    teacher = teacher_for(tiny_model_dir)
    req = requests_for(teacher, PROMPTS[:1])[0]
    run(teacher.complete(req))  # loads the model

    def oom(**kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    teacher._lm.generate = oom
    with pytest.raises(TeacherError, match="out of memory generating 1 answers at once; lower teacher.batch_size"):
        run(teacher.complete(req))


def test_teacher_threads_use_the_usable_cores_and_are_restored_afterwards(tiny_model_dir, monkeypatch):
    import torch

    from pipeline.teachers.hf_backend import torch_threads

    monkeypatch.delenv("DISTILL_TORCH_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert torch_threads(current=2) == 2 and torch_threads(current=8) == 2 and torch_threads(current=1) == 1
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert torch_threads(current=16) == 16 and torch_threads(current=4) == 4
    monkeypatch.setenv("DISTILL_TORCH_THREADS", "3")
    assert torch_threads(current=16) == 3
    monkeypatch.setenv("DISTILL_TORCH_THREADS", "many")
    with pytest.raises(ConfigError, match="DISTILL_TORCH_THREADS='many': not a whole number"):
        torch_threads(current=2)

    monkeypatch.setenv("DISTILL_TORCH_THREADS", "1")
    original = torch.get_num_threads()
    torch.set_num_threads(2)  # what a later stage in the same process expects to keep
    try:
        teacher = teacher_for(tiny_model_dir)
        run(teacher.complete(requests_for(teacher, PROMPTS[:1])[0]))
        seen, real_generate = [], teacher._lm.generate

        def spy(**kwargs):
            seen.append(torch.get_num_threads())
            return real_generate(**kwargs)

        teacher._lm.generate = spy
        run(teacher.complete(requests_for(teacher, PROMPTS[1:2])[0]))
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(original)
