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
   shrinks toward the pretrained rows, and its strength (a multiple of the features' variance) is
   chosen by 5-fold cross-validation (``choose_strength``: the lowest error within a standard error
   of the best agreement);
3. write those rows into an LM head of its own (an untied copy of the input embeddings when they
   were tied, so the label words read in a prompt keep their meaning).

On the demo (1,078 training rows, 500 evaluation snippets of other movies) the probe alone takes a
[0..5] student to 73.4% agreement with the teacher; fine-tuning from it did not improve on that at any
learning rate tried (2e-4 and 1e-4 diverge: the fitted rows are large, so a small change of the
features moves the label logits a lot; 2e-5 ends at 70.6%; 5e-6 with warmup never beat step 0), so
the demo fine-tunes gently and lets early stopping keep the probe. The trade-off is the spread map's:
there a pretrained head that was trained on the kept top layer reads better than a probe.

The student then serves exactly as before (argmax over the label tokens' logits). When labels share
their first tokens (book_flight, book_hotel: the whole-label path), the first token cannot tell them
apart, so the probe fits a row for every token of every label's completion, at every branch of the
labels' token trie (the last section below), and the student's whole-label scores follow the teacher.

Closed-form ridge (numpy) instead of a probe-training phase: the problem is a few hundred rows by
the hidden size, solved exactly in milliseconds, with no learning rate or step count to choose.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Ridge strengths tried, as multiples of the features' mean variance (centred: a decoder's final-normed
# states share one large mean vector, about 160-200 times their variance in SmolLM2, so a scale
# from the raw second moment made every strength but the smallest shrink the fit onto the pretrained
# head's rows, and with them its lean: on 369 whole reviews the probe answered "positive" for 88% of
# its own training rows, where the teacher said 59%).
RIDGE_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
CV_FOLDS = 5  # the strength is chosen by 5-fold cross-validation (one held-out fifth was a coin toss on 74 rows)
HOLDOUT_EVERY = 5  # the token trie's fit (fit_trie_rows) chooses its strength on every 5th row
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
    """Ridge toward ``prior``: W = argmin |F W - Y|^2 + lam |W - W0|^2, lam chosen by ``CV_FOLDS``-fold
    cross-validation (``choose_strength``: the lowest squared error within a standard error of the best
    held-out agreement of argmax). features
    [N, H], targets [N, L], prior [L, H] -> [L, H]."""
    n, h = features.shape
    centred = features - features.mean(0)
    scale = float(np.einsum("ij,ij->", centred, centred)) / max(n, 1) / h
    folds = min(CV_FOLDS, n) if n > 1 else 0
    fold = np.arange(n) % max(folds, 1)
    # the normal equations once: a fold's training rows are the whole set less its own rows
    gram, cross = features.T @ features, features.T @ targets
    parts = [(fold == k, features[fold == k]) for k in range(folds)]
    parts = [(held, f, gram - f.T @ f, cross - f.T @ targets[held], n - len(f)) for held, f in parts]

    def solve(g, xy, m, lam):  # (F'F + lam m I) W' = F'Y + lam m W0', m the rows fitted
        return np.linalg.solve(g + lam * m * np.eye(h), xy + lam * m * prior.T).T  # [L, H]

    scores = {}
    for c in RIDGE_GRID:
        agree, err = [], []
        for held, f, g, xy, m in parts:
            pred = f @ solve(g, xy, m, c * scale).T
            agree.append(float(np.mean(pred.argmax(1) == targets[held].argmax(1))))
            err.append(float(np.mean((pred - pred.mean(1, keepdims=True) - targets[held]) ** 2)))
        scores[c] = (float(np.mean(agree)) if agree else 0.0, float(np.mean(err)) if err else 0.0)
    c = choose_strength(scores, n)
    w = solve(gram, cross, n, c * scale)
    return w, {"ridge": c, "lambda": c * scale, "cv_folds": folds, "heldout_rows": n,
               "heldout_agreement": round(scores[c][0], 4), "heldout_mse": round(scores[c][1], 4)}


def choose_strength(scores: dict[float, tuple[float, float]], n: int) -> float:
    """The strength with the lowest cross-validated squared error among those whose cross-validated
    agreement is within one standard error (sqrt(a (1 - a) / n)) of the best. Agreement is what the
    student is judged by, but on ~1,000 rows it moves by a row or two between neighbouring strengths;
    the squared error, the fit's own objective, is the smoother estimate. Measured on the demo: by
    agreement alone 0.01 won by 1 row of 1,079 (0.676 against 0.675) and read 71.6% on the 500
    evaluation snippets, where 0.1, the lowest error within one standard error, reads 73.8%."""
    top = max(a for a, _ in scores.values())
    se = math.sqrt(max(top * (1 - top), 0.0) / max(n, 1))
    near = [c for c, (a, _) in scores.items() if a >= top - se - 1e-12]
    return min(near, key=lambda c: (scores[c][1], c))


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

    if len(rows) < 2 * HOLDOUT_EVERY:
        return None
    step = max(1, math.ceil(len(rows) / MAX_ROWS))
    use = [r for r in rows[::step] if r.get("label_probs") and sum(r["label_probs"]) > 0]
    if len(use) < 2 * HOLDOUT_EVERY:
        return None
    n_labels = len(label_ids)
    if hard:
        targets = probe_targets([[float(j == r["label_index"]) for j in range(n_labels)] for r in use])
    else:
        targets = probe_targets([r["label_probs"] for r in use])
    firsts = [ids[0] for ids in label_ids]
    if len(set(firsts)) != len(firsts):
        return _init_trie_head(model, use, label_ids, pad_id, targets)
    features, top = answer_features(model, use, pad_id)
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


def _init_trie_head(model, use: Sequence[dict], label_ids: Sequence[Sequence[int]], pad_id: int,
                    targets: np.ndarray) -> dict:
    """init_label_head for labels that share first tokens: a row for every token of every label's
    completion, fitted at every node of their trie (the section below)."""
    import torch

    trie = label_trie(label_ids)
    feats, rest = path_features(model, use, label_ids, pad_id)
    untie_lm_head(model)
    head = model.get_output_embeddings().weight
    weights = head.detach().float().cpu().numpy().astype(np.float64)
    prior = {t: weights[t] for t in trie_tokens(trie)}
    before = trie_scores(_token_logits(feats, prior), trie, len(label_ids), rest)
    rows, info = fit_trie_rows(feats, rest, trie, targets, prior)
    with torch.no_grad():
        for token, row in rows.items():
            head[token] = torch.as_tensor(row, dtype=head.dtype, device=head.device)
    return {"rows": len(use), "train_agreement_before": round(float(np.mean(before.argmax(1) == targets.argmax(1))), 4),
            **info}


# --- labels that share their first tokens (book_flight, book_hotel): a probe at every branch ---------
#
# The student scores such a label by its whole completion (label tokens, then end of turn; the
# student rule of pipeline/label_scoring.py): a chain of next-token choices, one per node of the
# labels' token trie. So the probe fits the head's rows for every token of every label's completion:
# at a node where the labels part (after "book_": flight, hotel, car) a child's logit is fitted to
# the log of the teacher's mass under that child (centred over the node's children), placed
# TRIE_MARGIN above the log of the mass of the vocabulary's untouched tokens there (read through the
# pretrained head). A bottom-layer student's pretrained head is flat: the rest of a 49k vocabulary
# holds most of the mass at every node, and a label with more nodes than another would lose to it by
# that alone. A token that is a child at several nodes ("_", the end-of-turn token) gets one row
# fitted to all of them; at the nodes where it is not a child it is fitted to ANCHOR_MARGIN below the
# untouched vocabulary's mass. Its new logit there still takes mass like any other token's: the
# held-out scores that choose the ridge strength count it, so they are exactly the student's scores
# after the fit (tested).

HEAD_CHUNK_NODES = 32  # path_features: nodes per head matmul, [batch, 32, vocabulary] floats at a time
TRIE_MARGIN = 6.0  # e^-6: the untouched vocabulary's share at a node after the fit, a quarter of a percent
# a fitted token at a node where it is not a child ("_" at the root) is held this far below the untouched
# vocabulary's mass there: the features of neighbouring nodes are alike, so left free it would take the
# node's mass (on a 7-intent task, free rows: 6% agreement; held: 98%)
ANCHOR_MARGIN = 2.0
# the trie's rows fit hundreds of nodes' worth of rows each and need less shrinkage than RIDGE_GRID's
TRIE_RIDGE_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def trie_tokens(trie) -> list[int]:
    """Every token that is a child somewhere in the trie: the head rows the probe fits."""
    return sorted({t for children in trie.values() for t in children})


def label_trie(label_ids: Sequence[Sequence[int]]) -> dict[tuple[int, ...], dict[int, list[int]]]:
    """{node prefix: {child token: [labels under that child]}}, over every label's completion."""
    nodes: dict[tuple[int, ...], dict[int, list[int]]] = {}
    for j, ids in enumerate(label_ids):
        for t, token in enumerate(ids):
            nodes.setdefault(tuple(ids[:t]), {}).setdefault(token, []).append(j)
    return nodes


def path_features(model, rows: Sequence[dict], label_ids: Sequence[Sequence[int]], pad_id: int,
                  batch_size: int = 16) -> tuple[dict[tuple[int, ...], np.ndarray], dict[tuple[int, ...], np.ndarray]]:
    """Per trie node: ([N, H] the final-normed hidden state that predicts the node's next token,
    [N] the log of the mass the model's head gives there to every token the probe leaves alone: all
    but ``trie_tokens``). The prompt runs once per batch (its shared prefix once, ``shared_forward``);
    the other nodes then run as a token tree on its KV cache, in chunks of whole subtrees
    (``label_scoring.tree_chunks``), as ``label_scoring.candidate_logprobs`` scores them.

    Each batch is kept as one [B, nodes, H] array and the head runs over ``HEAD_CHUNK_NODES`` nodes at
    a time: one small array and one [B, V] head output per node and batch had malloc's heap grow
    without bound (77 banking intents, 383 nodes: 17 MB a row, 22 GB before 400 rows were read)."""
    import torch

    from pipeline.label_scoring import (
        TREE_CHUNK_NODES,
        Encoded,
        _cache_of,
        shared_forward,
        tree_chunks,
        tree_forward,
    )

    backbone = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    head = model.get_output_embeddings()
    trie = label_trie(label_ids)
    fitted = trie_tokens(trie)
    inner = [node for node in trie if node]
    order = [(), *inner]  # a batch's nodes, in the order of its arrays
    states, masses = [], []
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(rows), batch_size):
            enc = Encoded([r["input_ids"][: r["answer_start"]] for r in rows[i : i + batch_size]], pad_id)
            with torch.inference_mode():
                out, mask = shared_forward(backbone, enc)
                got = {(): out.last_hidden_state[:, -1]}
                cache = _cache_of(out)
                for chunk in tree_chunks(inner, TREE_CHUNK_NODES) if inner else []:
                    index = {node: k for k, node in enumerate(chunk)}
                    tree = tree_forward(backbone, chunk, index, cache, mask).last_hidden_state
                    cache.crop(-len(chunk))  # back to the prompt alone
                    got.update({node: tree[:, k] for node, k in index.items()})
                del out, cache
                batch = torch.stack([got[node] for node in order], 1)  # [B, nodes, H]
                rest = torch.empty(batch.shape[:2])
                for s in range(0, batch.shape[1], HEAD_CHUNK_NODES):
                    logits = head(batch[:, s : s + HEAD_CHUNK_NODES]).float()
                    logits[..., fitted] = float("-inf")
                    rest[:, s : s + HEAD_CHUNK_NODES] = logits.logsumexp(-1).cpu()
                    del logits
                states.append(batch.float().cpu().numpy())
                masses.append(rest.numpy())
    finally:
        model.train(was_training)
    states_all, masses_all = np.concatenate(states), np.concatenate(masses)
    del states, masses
    return ({node: states_all[:, k].astype(np.float64) for k, node in enumerate(order)},
            {node: masses_all[:, k].astype(np.float64) for k, node in enumerate(order)})


def _node_targets(targets: np.ndarray, children: dict[int, list[int]]) -> np.ndarray:
    """[N, C] the log of the (tempered) label mass under each child, centred over the children."""
    mass = np.stack([np.logaddexp.reduce(targets[:, under], axis=1) for under in children.values()], axis=1)
    return mass - mass.mean(1, keepdims=True)


def _token_logits(feats, rows: dict[int, np.ndarray], sel=slice(None)) -> dict[tuple[int, ...], np.ndarray]:
    """{node: [N, T] the logits of the fitted tokens (in ``rows``' order)} for head rows ``rows``."""
    w = np.stack(list(rows.values()), 1)
    return {node: f[sel] @ w for node, f in feats.items()}


def trie_scores(logits: dict[tuple[int, ...], np.ndarray], trie, n_labels: int, rest) -> np.ndarray:
    """[N, L] whole-label log-probs from the fitted tokens' logits at every node ({node: [N, T]},
    tokens in ``trie_tokens`` order) and the log of the untouched vocabulary's mass ({node: [N]})."""
    index = {t: i for i, t in enumerate(trie_tokens(trie))}
    n = len(next(iter(rest.values())))
    out = np.zeros((n, n_labels))
    for node, children in trie.items():
        z = logits[node]
        norm = np.logaddexp(np.logaddexp.reduce(z, axis=1), rest[node])
        for token, under in children.items():
            out[:, under] += (z[:, index[token]] - norm)[:, None]
    return out


def fit_trie_rows(feats, rest, trie, targets: np.ndarray, prior: dict[int, np.ndarray]) -> tuple[dict[int, np.ndarray], dict]:
    """One ridge row per fitted token, toward its ``prior`` row: at every node where it is a child,
    to the node's goal; at every other node, ANCHOR_MARGIN below the untouched vocabulary's mass
    there (both sides weigh the same in all). The strength is chosen by whole-label agreement on
    every HOLDOUT_EVERY-th row held out."""
    n, h = feats[()].shape
    held = np.arange(n) % HOLDOUT_EVERY == 0
    scale = float(np.einsum("ij,ij->", feats[()], feats[()])) / n / h
    goal = {node: _node_targets(targets, ch) + (rest[node] + TRIE_MARGIN)[:, None] for node, ch in trie.items()}
    tokens = trie_tokens(trie)

    def normal_equations(keep):
        """{token: (A, b, weight)}: a token's weighted least squares over its rows, ridge aside.
        Each node's Gram matrix is computed once and shared by every token."""
        grams = {node: f[keep].T @ f[keep] for node, f in feats.items()}
        m = int(keep.sum())
        out = {}
        for token in tokens:
            child = [node for node, ch in trie.items() if token in ch]
            other = [node for node in trie if node not in child]
            w_child = len(other) / len(child) if other else 1.0
            a = sum(grams[node] for node in child) * w_child + sum((grams[node] for node in other), np.zeros((h, h)))
            b = sum(feats[node][keep].T @ goal[node][keep, list(trie[node]).index(token)] for node in child) * w_child
            b = b + sum((feats[node][keep].T @ (rest[node][keep] - ANCHOR_MARGIN) for node in other), np.zeros(h))
            out[token] = (a, b, m * (len(child) * w_child + len(other)))
        return out

    def solve(equations, lam):
        return {token: np.linalg.solve(a + lam * weight * np.eye(h), b + lam * weight * prior[token])
                for token, (a, b, weight) in equations.items()}

    fit_part = normal_equations(~held)
    best = None
    for c in TRIE_RIDGE_GRID:
        pred = trie_scores(_token_logits(feats, solve(fit_part, c * scale), held), trie, targets.shape[1],
                           {k: v[held] for k, v in rest.items()})
        agree = float(np.mean(pred.argmax(1) == targets[held].argmax(1)))
        centred = pred - pred.mean(1, keepdims=True)
        err = float(np.mean((centred - (targets[held] - targets[held].mean(1, keepdims=True))) ** 2))
        if best is None or (agree, -err) > best[0]:
            best = ((agree, -err), c)
    (agree, neg_err), c = best
    return solve(normal_equations(np.ones(n, dtype=bool)), c * scale), {
        "ridge": c, "heldout_rows": int(held.sum()), "heldout_agreement": round(agree, 4),
        "heldout_mse": round(-neg_err, 4), "trie_nodes": len(trie), "rows_fitted": len(tokens)}
