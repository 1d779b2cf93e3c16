"""Start a label student from a linear probe of its own features (LP-FT, Kumar et al. 2022).

A student cut from its teacher can start with features that already separate the labels well (on
the demo, a ridge probe of a student built from the teacher's layers 0-5 agrees with the teacher on
up to 73% of the 500 evaluation snippets, ridge strength picked on them; with the demo's spread map
[0, 6, 12, 18, 24, 29], 59%), but with an LM head that reads them for next-token prediction, not
for this task.
Fine-tuning from there first spends its few hundred rows on re-learning a readout, and the
gradients of that random-ish readout distort the features (Kumar et al. 2022). So before training:

1. run the student once over the training prompts (no gradient) and keep the final-normed hidden
   state at the position that predicts the answer's first token;
2. fit, by ridge regression, the rows of the LM head for each label's first token to the training
   targets: the teacher's centred label log-probs, standardised to unit sd over the set (exactly
   label_kd.label_logit_mse's target; for one-hot rows, a least-squares classifier). The ridge
   shrinks toward the pretrained rows, and its strength is chosen on a fifth of the rows held out;
3. write those rows into an LM head of its own (an untied copy of the input embeddings when they
   were tied, so the label words read in a prompt keep their meaning).

On the demo (1,078 training rows, 500 evaluation snippets of other movies) the probe alone takes a
[0..5] student to 73.4% agreement with the teacher; fine-tuning from it did not improve on that at any
learning rate tried (2e-4 and 1e-4 diverge: the fitted rows are large, so a small change of the
features moves the label logits a lot; 2e-5 ends at 70.6%; 5e-6 with warmup never beat step 0), so
the demo fine-tunes gently and lets early stopping keep the probe. The trade-off is the spread map's:
there a pretrained head that was trained on the kept top layer reads better than a probe.

The student then serves exactly as before (argmax over the label tokens' logits). Applies when the
labels begin with different tokens (the first-token path); with shared first tokens the first
token cannot tell them apart and nothing is changed.

Closed-form ridge (numpy) instead of a probe-training phase: the problem is a few hundred rows by
the hidden size, solved exactly in milliseconds, with no learning rate or step count to choose.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# ridge strengths tried, as multiples of the mean eigenvalue of the features' Gram matrix / rows
RIDGE_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
HOLDOUT_EVERY = 5  # every 5th row chooses the ridge strength
MAX_ROWS = 2000  # features from at most this many training rows (the fit needs hundreds, not thousands)
PROB_FLOOR = 1e-4  # a one-hot target becomes log(1e-4): the standardisation makes its scale irrelevant
LABEL_MARGIN = 2.0  # the label rows' shared logit: this far above the best other token


def probe_targets(label_probs: Sequence[Sequence[float]]) -> np.ndarray:
    """[N, L] centred log-probs, divided by their sd over the whole set (unit spread)."""
    logs = np.log(np.clip(np.asarray(label_probs, dtype=np.float64), PROB_FLOOR, None))
    centred = logs - logs.mean(axis=1, keepdims=True)
    sd = float(np.sqrt((centred**2).mean()))
    return centred / sd if sd > 1e-9 else centred


def fit_rows(features: np.ndarray, targets: np.ndarray, prior: np.ndarray) -> tuple[np.ndarray, dict]:
    """Ridge toward ``prior``: W = argmin |F W - Y|^2 + lam |W - W0|^2, lam chosen on held-out rows by
    agreement of argmax (ties: squared error). features [N, H], targets [N, L], prior [L, H] -> [L, H]."""
    n, h = features.shape
    held = np.arange(n) % HOLDOUT_EVERY == 0
    scale = float(np.einsum("ij,ij->", features, features)) / max(n, 1) / h

    def solve(f, y, lam):
        gram = f.T @ f + lam * len(f) * np.eye(h)
        return np.linalg.solve(gram, f.T @ y + lam * len(f) * prior.T).T  # [L, H]

    best = None
    for c in RIDGE_GRID:
        lam = c * scale
        w = solve(features[~held], targets[~held], lam)
        pred = features[held] @ w.T
        agree = float(np.mean(pred.argmax(1) == targets[held].argmax(1)))
        err = float(np.mean((pred - pred.mean(1, keepdims=True) - targets[held]) ** 2))
        key = (agree, -err)
        if best is None or key > best[0]:
            best = (key, c, lam)
    (agree, neg_err), c, lam = best
    w = solve(features, targets, lam)
    return w, {"ridge": c, "heldout_rows": int(held.sum()), "heldout_agreement": round(agree, 4),
               "heldout_mse": round(-neg_err, 4)}


def answer_features(model, rows: Sequence[dict], pad_id: int, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """([N, H] the final-normed hidden state that predicts each row's first answer token,
    [N] the largest logit over the vocabulary there)."""
    import torch

    from pipeline.label_scoring import Encoded, shared_forward

    backbone = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    out, top = [], []
    head = model.get_output_embeddings()
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(rows), batch_size):
            # left padding: the last position is every row's answer position; the prompts' shared
            # prefix (chat template, instructions) runs once per batch
            enc = Encoded([r["input_ids"][: r["answer_start"]] for r in rows[i : i + batch_size]], pad_id)
            with torch.inference_mode():
                hidden = shared_forward(backbone, enc)[0].last_hidden_state[:, -1]
                top.append(head(hidden).float().max(-1).values.cpu().numpy())
            out.append(hidden.float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out).astype(np.float64), np.concatenate(top).astype(np.float64)


def untie_lm_head(model) -> None:
    """Give the model an LM head of its own (a copy of the tied embeddings), saved as such."""
    import torch

    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None or head.weight is not emb.weight:
        return
    head.weight = torch.nn.Parameter(emb.weight.detach().clone())
    for cfg in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        cfg.tie_word_embeddings = False
    if hasattr(model, "_tied_weights_keys"):
        model._tied_weights_keys = {} if isinstance(model._tied_weights_keys, dict) else []


def init_label_head(model, rows: Sequence[dict], label_ids: Sequence[Sequence[int]], pad_id: int, *,
                    hard: bool = False) -> dict | None:
    """Set the label first-token rows of the LM head from a ridge probe (module docstring). Returns
    what was done, for the train manifest, or None when it does not apply. ``hard``: fit the rows'
    own label (``label_index``) one-hot, not the teacher's distribution: the probe of a student
    trained on hard labels (method sft) must not see the soft ones."""
    import torch

    firsts = [ids[0] for ids in label_ids]
    if len(set(firsts)) != len(firsts) or len(rows) < 2 * HOLDOUT_EVERY:
        return None
    step = max(1, math.ceil(len(rows) / MAX_ROWS))
    use = [r for r in rows[::step] if r.get("label_probs") and sum(r["label_probs"]) > 0]
    if len(use) < 2 * HOLDOUT_EVERY:
        return None
    features, top = answer_features(model, use, pad_id)
    if hard:
        targets = probe_targets([[float(j == r["label_index"]) for j in range(len(firsts))] for r in use])
    else:
        targets = probe_targets([r["label_probs"] for r in use])
    untie_lm_head(model)
    head = model.get_output_embeddings().weight
    prior = head.detach()[firsts].float().cpu().numpy().astype(np.float64)
    before = float(np.mean((features @ prior.T).argmax(1) == targets.argmax(1)))
    # Only the rows' differences decide between labels: fit those. Their shared part decides how much
    # of the vocabulary's mass the label tokens hold (a student cut from the teacher's lower layers
    # may start with P(any label) ~ e^-40): fit it to sit LABEL_MARGIN above the row's best other
    # token, so the cross-entropy term starts from a sane loss instead of undoing the probe.
    shared, _ = fit_rows(features, (top + LABEL_MARGIN)[:, None], prior.mean(0, keepdims=True))
    w, info = fit_rows(features, targets, prior - prior.mean(0, keepdims=True))
    with torch.no_grad():
        head[firsts] = torch.as_tensor(w + shared, dtype=head.dtype, device=head.device)
    return {"rows": len(use), "train_agreement_before": round(before, 4), **info}
