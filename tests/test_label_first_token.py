"""Label-level KD reads the student's label distribution at the first answer token when the labels
begin with different tokens (one forward), and scores whole label strings otherwise."""
from __future__ import annotations

import torch

from pipeline.training.trainer import label_first_token_ids

# two rows x two labels; prompt tokens 5, 6 then the answer (labels -100 on the prompt)
CAND_IDS = torch.tensor([[5, 6, 11, 2], [5, 6, 12, 2], [5, 6, 11, 2], [5, 6, 12, 2]])
CAND_LABELS = torch.tensor([[-100, -100, 11, 2], [-100, -100, 12, 2]] * 2)


def test_distinct_first_tokens_are_returned_per_row_and_label():
    ids = label_first_token_ids(CAND_IDS, CAND_LABELS, n_labels=2)
    assert ids.tolist() == [[11, 12], [11, 12]]


def test_labels_sharing_a_first_token_need_the_whole_strings():
    shared = CAND_IDS.clone()
    shared[:, 2] = 11  # "very good" / "very bad": both start with "very"
    assert label_first_token_ids(shared, CAND_LABELS, n_labels=2) is None


def test_first_token_path_matches_whole_string_scoring_when_labels_are_one_token(tiny_model_dir):
    """With one-token labels and no end token after them, both paths give the same label log-odds."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompt = [5, 6, 7]
    with torch.no_grad():
        first = torch.log_softmax(model(torch.tensor([prompt])).logits[0, -1], -1)[[11, 12]]
        whole = [torch.log_softmax(model(torch.tensor([prompt + [t]])).logits[0, -2], -1)[t] for t in (11, 12)]
    assert torch.allclose(first[0] - first[1], whole[0] - whole[1], atol=1e-5)
