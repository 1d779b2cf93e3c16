"""A local teacher scores a label set in one prompt pass; the numbers must equal plain forwards of
prompt + label, merged over the documented surface variants."""
from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import record_forward_shapes


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), tok


def _plain(model, prompt_ids: list[int], cont: list[int]) -> torch.Tensor:
    """log-probs at every position of one ordinary forward of prompt + continuation."""
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([prompt_ids + cont])).logits[0].float(), -1)


def _prompt(tok, text: str) -> tuple[str, list[int]]:
    rendered = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
    return rendered, tok(rendered, add_special_tokens=False)["input_ids"]


def test_teacher_scores_equal_plain_forwards_summed_over_variants(lm):
    from pipeline.label_scoring import _boundary_ids, surface_variants, teacher_label_logprobs

    model, tok = lm
    labels = ["book", "book_flight", "weather"]  # "book" begins "book_flight": the next token decides
    texts = ["fly me to Oslo", "is it cold"]
    rendered = [_prompt(tok, t) for t in texts]
    got = teacher_label_logprobs(model, tok, [r for r, _ in rendered], labels)
    boundary = list(_boundary_ids(tok))
    for (_, ids), scores in zip(rendered, got):
        for label in labels:
            seen, terms = set(), []
            for variant in surface_variants(label):
                cont = tok(variant, add_special_tokens=False)["input_ids"]
                if tuple(cont) in seen:
                    continue
                seen.add(tuple(cont))
                lp = _plain(model, ids, cont)
                term = sum(lp[len(ids) - 1 + t, c].item() for t, c in enumerate(cont))
                if label == "book":
                    term += lp[len(ids) - 1 + len(cont), boundary].logsumexp(-1).item()
                terms.append(term)
            expected = math.log(sum(math.exp(x) for x in terms))
            assert scores[label] == pytest.approx(expected, abs=1e-3), label


def test_student_scores_read_the_first_token_or_the_whole_completion(lm):
    from pipeline.label_scoring import label_completion_ids, student_label_logprobs

    model, tok = lm
    msgs = [{"role": "user", "content": "x"}]
    rendered, ids = _prompt(tok, "a fine film")
    for labels in (["positive", "negative"], ["book_flight", "book_hotel"]):
        label_ids = [label_completion_ids(tok, msgs, lab) for lab in labels]
        got = student_label_logprobs(model, tok, [rendered], label_ids, labels)[0]
        distinct = len({c[0] for c in label_ids}) == len(label_ids)
        for label, cont in zip(labels, label_ids):
            lp = _plain(model, ids, cont)
            used = cont[:1] if distinct else cont
            expected = sum(lp[len(ids) - 1 + t, c].item() for t, c in enumerate(used))
            assert got[label] == pytest.approx(expected, abs=1e-3)


def test_generate_scores_a_label_task_with_a_local_teacher(task_copy, data_root, tiny_model_dir, tmp_path):
    """Every record carries every label's probability, its answer is the most probable label, it
    cost no output token, and the content-free answers are asked for calibration."""
    from pipeline.config.task import load_task
    from pipeline.records import Record, read_jsonl
    from pipeline.stages.generate import run_generate
    from tests.curate_fixtures import edit_task_yaml

    folder = task_copy("sentiment")
    (folder / "reviews.jsonl").write_text('{"text": "a warm film"}\n{"text": "a dull mess"}\n')
    edit_task_yaml(folder, teacher={"backend": "hf", "model": str(tiny_model_dir), "batch_size": 2},
                   inputs={"source": {"path": "reviews.jsonl"}})
    run_generate(load_task(folder), quiet=True)
    root = data_root / "data" / "sentiment" / "generated"
    records = list(read_jsonl(root / "generated.jsonl", Record))
    assert len(records) == 2
    for r in records:
        assert set(r.label_logprobs) == {"positive", "negative"} and r.logprobs is None
        assert r.completion == max(r.label_logprobs, key=r.label_logprobs.get)
        assert r.usage.completion_tokens == 0
    empty = list(read_jsonl(root / "content_free.jsonl", Record))
    assert [r.inputs["text"] for r in empty] == ["N/A", "", "[MASK]"]


def test_a_shared_prefix_runs_once_and_changes_no_score(lm, monkeypatch):
    """Prompts that share the template's system turn and the task's instructions: the prefix runs
    once (one forward of batch 1) and every score equals the plain left-padded batch's, for both
    rules, labels of one token and labels of several."""
    import pipeline.label_scoring as ls

    model, tok = lm
    intro = "You label movie reviews. Read the review, then answer with one label only. Review: "
    texts = [_prompt(tok, intro + t)[0] for t in ("a warm film", "dull", "an utterly gripping, tender story")]
    assert ls.shared_prefix_length(ls.encode_prompts(tok, texts).rows) >= ls.MIN_SHARED_PREFIX
    labels = ["book", "book_flight", "weather"]
    msgs = [{"role": "user", "content": "x"}]
    label_ids = [ls.label_completion_ids(tok, msgs, lab) for lab in ["positive", "negative"]]
    calls = record_forward_shapes(monkeypatch, model)
    shared_teacher = ls.teacher_label_logprobs(model, tok, texts, labels)
    assert calls[0][0] == 1  # the prefix, once
    shared_student = ls.student_label_logprobs(model, tok, texts, label_ids, ["positive", "negative"])
    monkeypatch.setattr(ls, "MIN_SHARED_PREFIX", 10_000)  # the plain path
    plain_teacher = ls.teacher_label_logprobs(model, tok, texts, labels)
    plain_student = ls.student_label_logprobs(model, tok, texts, label_ids, ["positive", "negative"])
    for got, want in zip(shared_teacher + shared_student, plain_teacher + plain_student):
        for label in want:
            assert got[label] == pytest.approx(want[label], abs=1e-4)


def test_label_continuations_run_once_per_distinct_prefix_as_a_token_tree(lm, monkeypatch):
    """Labels that share their first tokens: after the prompt pass, one forward holds one position per
    distinct prefix of the candidates' tokens (not one padded row per candidate), and every score
    still equals the plain forward of prompt + label."""
    import pipeline.label_scoring as ls

    model, tok = lm
    cands = [tok(t, add_special_tokens=False)["input_ids"] for t in ("book_flight", "book_hotel", "book_car", "go_home")]
    assert len({c[0] for c in cands}) < len(cands) and all(len(c) > 1 for c in cands)
    prefixes = {tuple(c[:t]) for c in cands for t in range(1, len(c))}
    rendered = [_prompt(tok, t) for t in ("fly me to Oslo", "a room in Rome for two nights please")]
    calls = record_forward_shapes(monkeypatch, model)
    got = ls.candidate_logprobs(model, ls.encode_prompts(tok, [r for r, _ in rendered]), cands)
    assert [tuple(s) for s in calls[1:]] == [(2, len(prefixes))]  # one tree pass, one position per prefix
    assert len(prefixes) < sum(len(c) - 1 for c in cands)  # shared prefixes ran once
    monkeypatch.undo()
    for row, (_, ids) in enumerate(rendered):
        for j, cont in enumerate(cands):
            lp = _plain(model, ids, cont)
            assert float(got[row, j]) == pytest.approx(sum(lp[len(ids) - 1 + t, c].item() for t, c in enumerate(cont)),
                                                       abs=1e-3)


def test_a_token_tree_run_in_chunks_scores_as_one_pass(lm, monkeypatch):
    """Many labels: the tree runs a few whole subtrees at a time, the prompt's cache cropped back after
    each chunk, and every score equals the one-pass tree's (a cache left holding an earlier chunk's
    positions, or a node split from its ancestors, would change them)."""
    import pipeline.label_scoring as ls

    model, tok = lm
    cands = [tok(t, add_special_tokens=False)["input_ids"]
             for t in ("book_flight", "book_hotel", "cancel_booking", "check_status", "get_weather", "Book_car")]
    enc = ls.encode_prompts(tok, [_prompt(tok, t)[0] for t in ("fly me to Oslo", "is it raining in Rome")])
    flags = [False, True, False, False, True, False]
    one = ls.candidate_logprobs(model, enc, cands, boundary=ls._boundary_ids(tok), needs_boundary=flags)
    nodes = {tuple(c[:t]) for c, f in zip(cands, flags) for t in range(1, len(c) + f)}
    chunks = ls.tree_chunks(nodes, 2)
    assert len(chunks) > 2 and sorted(n for c in chunks for n in c) == sorted(nodes)
    assert all(node[:t] in chunk for chunk in chunks for node in chunk for t in range(1, len(node)))
    monkeypatch.setattr(ls, "TREE_CHUNK_NODES", 2)
    calls = record_forward_shapes(monkeypatch, model)
    chunked = ls.candidate_logprobs(model, enc, cands, boundary=ls._boundary_ids(tok), needs_boundary=flags)
    assert len(calls) == 1 + len(chunks)
    assert chunked.numpy() == pytest.approx(one.numpy(), abs=1e-4)
