"""Label-level KD reads the student's label distribution in one forward: at the answer's first
position when the labels begin with different tokens, else from one packed forward of the prompt
followed by every label (shared prefixes: book_flight, book_hotel). Both must equal what separate,
plain forwards of prompt + label give."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from pipeline.training.trainer import KDTrainer, add_target_logits_head


def _model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    add_target_logits_head(model)
    return model


def _plain_label_logprob(model, prompt: list[int], label: list[int]) -> float:
    """log P(label | prompt) from one ordinary forward of prompt + label."""
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([prompt + label])).logits[0].float(), -1)
    return sum(lp[len(prompt) - 1 + t, tok].item() for t, tok in enumerate(label))


def test_packed_forward_gives_each_shared_prefix_label_its_own_exact_logprob(tiny_model_dir):
    model = _model(tiny_model_dir)
    labels = [[40, 41, 2], [40, 42, 2], [40, 41, 43, 2], [50, 2]]  # three share token 40
    prompts = [[5, 6, 7, 8], [9, 10, 11]]
    width = 8
    ids = torch.zeros(2, width, dtype=torch.long)  # right-padded rows: prompt + the teacher's label
    for b, p in enumerate(prompts):
        ids[b, : len(p) + 3] = torch.tensor(p + labels[0])
    inputs = {"input_ids": ids, "answer_start": torch.tensor([4, 3]), "label_index": torch.tensor([0, 2])}
    fake = SimpleNamespace(label_ids=labels, processing_class=SimpleNamespace(pad_token_id=0))
    with torch.no_grad():
        seq_lp, ce_sum, n = KDTrainer._whole_label_scores(fake, model, inputs)
    for b, p in enumerate(prompts):
        for j, lab in enumerate(labels):
            assert abs(seq_lp[b, j].item() - _plain_label_logprob(model, p, lab)) < 1e-4
    # the CE is the teacher label's own completion, summed over its tokens
    expected = -(seq_lp[0, 0] + seq_lp[1, 2])
    assert abs(ce_sum.item() - expected.item()) < 1e-4 and int(n) == 3 + 4


def test_first_token_path_reads_the_answer_position_even_when_the_prompt_is_trained(tiny_model_dir):
    """completion_only_loss: false puts the prompt's tokens in the label mask too; the label
    distribution must still come from the position that predicts the answer's first token."""
    model = _model(tiny_model_dir)
    prompt, answer = [5, 6, 7, 8, 9], [40, 2]
    ids = torch.tensor([prompt + answer])
    fake = SimpleNamespace(first_ids=[40, 50])
    expected = [_plain_label_logprob(model, prompt, [t]) for t in (40, 50)]
    for labels in (torch.tensor([[-100] * 5 + answer]), ids.clone()):  # completion only, then everything
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
                  "answer_start": torch.tensor([5])}
        with torch.no_grad():
            seq_lp, _, _ = KDTrainer._first_token_scores(fake, model, inputs)
        assert torch.allclose(seq_lp[0], torch.tensor(expected), atol=1e-4)


def test_labels_that_share_a_prefix_run_it_once():
    """The packed row holds the prompt and one position per distinct prefix of the labels' completions
    (40; 40 41; and the others' own), not one per label token; the logits are read at the prompt's end
    and at those positions only."""
    from pipeline.training.trainer import packed_label_batch

    labels = [[40, 41, 2], [40, 42, 2], [40, 41, 43, 2], [50, 2]]
    prefixes = {(40,), (40, 41), (40, 42), (40, 41, 43), (50,)}
    packed = packed_label_batch([[5, 6, 7, 8], [9, 10, 11]], labels, 0, torch.float32)
    assert packed["input_ids"].shape == (2, 4 + len(prefixes))
    assert len(packed["logit_positions"]) == 2 * (1 + len(prefixes)) < len(packed["targets"]) == 2 * 12
    assert packed["input_ids"][1, 3:3 + len(prefixes)].tolist() == [40, 50, 41, 42, 43]
