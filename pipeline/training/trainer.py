"""KDTrainer: TRL's SFTTrainer with a knowledge-distillation loss on stored teacher logprobs.

Everything SFTTrainer does (SFTConfig, PEFT, accelerate/DDP/FSDP/DeepSpeed, checkpoints, logging)
is kept; only the loss changes, and the collator carries the teacher's side columns (see
pipeline/training/data.py for their shape) next to input_ids and labels.

token level: one forward; the student's logits are projected only at target positions (the full
  (batch, seq, vocab) logits are never built), then kd_loss.sparse_topk_kl + CE.
label level: the student's log P(label) for every label, from one forward (DDP needs exactly one
  per backward). When the labels begin with different tokens it is read at the answer's first
  position of the same forward as the CE. Otherwise (shared prefixes: book_flight, book_hotel) each
  row is packed as prompt + the labels' token trie (every distinct prefix once), with a 4D attention
  mask that lets each position see the prompt and its own ancestors only, so the prompt runs once
  and the vocabulary projection is computed only at the prompt's end and the trie's positions. Then
  label_kd.label_kl (T) or label_kd.label_logit_mse.
"""
from __future__ import annotations

import functools
from typing import Any

import torch
from transformers.modeling_outputs import CausalLMOutput
from trl import SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from pipeline.training.kd_loss import kd_objective, sparse_topk_kl, token_ce
from pipeline.training.label_kd import label_kd_objective, label_kl, label_logit_mse

TOKEN_COLUMNS = ("kd_pos", "kd_ids", "kd_logprobs")
LABEL_COLUMNS = ("answer_start", "label_probs", "label_index")


class KDCollator:
    """Pads input_ids/labels with TRL's collator, then the teacher's side columns to the same length."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.base = DataCollatorForLanguageModeling(pad_token_id=pad_token_id, pad_to_multiple_of=pad_to_multiple_of)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.base([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples])
        if "kd_pos" in examples[0]:
            batch.update(self._token_columns(examples, batch["input_ids"].shape[1]))
        if "label_probs" in examples[0]:
            batch.update(
                answer_start=torch.tensor([e["answer_start"] for e in examples], dtype=torch.long),
                label_probs=torch.tensor([e["label_probs"] for e in examples], dtype=torch.float32),
                label_index=torch.tensor([e["label_index"] for e in examples], dtype=torch.long),
            )
        return batch

    @staticmethod
    def _token_columns(examples, length: int) -> dict[str, torch.Tensor]:
        k = max((len(ids) for e in examples for ids in e["kd_ids"]), default=1)
        shape = (len(examples), length, k)
        ids = torch.zeros(shape, dtype=torch.long)
        lps = torch.zeros(shape, dtype=torch.float32)
        mask = torch.zeros(shape, dtype=torch.bool)
        for b, e in enumerate(examples):
            for p, cid, clp in zip(e["kd_pos"], e["kd_ids"], e["kd_logprobs"]):
                ids[b, p, : len(cid)] = torch.tensor(cid)
                lps[b, p, : len(clp)] = torch.tensor(clp)
                mask[b, p, : len(cid)] = True
        return {"teacher_ids": ids, "teacher_logprobs": lps, "teacher_mask": mask}


def add_target_logits_head(model) -> None:
    """Let ``model(..., labels=labels, target_logits=True)`` return logits only at positions whose
    next-token label is not -100, as [N, vocab], in (batch, position) order; or, with
    ``logit_positions`` ([N, 2] row/position pairs), only at those positions. Patched on the
    instance like TRL's fused head, so DDP/FSDP/PEFT wrappers still run their own forward."""
    previous_forward = model.forward
    text_config = model.config.get_text_config()
    softcap = getattr(text_config, "final_logit_softcapping", None)
    logit_scale = getattr(text_config, "logit_scale", None)

    @functools.wraps(type(model).forward)
    def forward(self, *args, target_logits=False, labels=None, logit_positions=None, **kwargs):
        if not target_logits:
            if labels is not None:
                kwargs["labels"] = labels
            return previous_forward(*args, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state
        if logit_positions is not None:  # [N, 2]: (row, position) pairs, in that order
            picked = hidden[logit_positions[:, 0], logit_positions[:, 1]]
        else:
            picked = hidden[:, :-1][labels[:, 1:] != -100]
        # Call the head as a module (not its weight): DeepSpeed ZeRO-3 and FSDP gather parameters in
        # module hooks, and keep them gathered for the backward.
        logits = self.get_output_embeddings()(picked)
        if logit_scale is not None:
            logits = logits * logit_scale
        if softcap is not None:  # Gemma 2/3: the model's own forward applies this after the head
            logits = torch.tanh(logits / softcap) * softcap
        return CausalLMOutput(logits=logits.float())

    model.forward = forward.__get__(model)


def packed_label_batch(prompts: list[list[int]], label_ids: list[list[int]], pad_id: int, dtype) -> dict:
    """Each row as its prompt followed by the labels' token trie, for one forward.

    Every distinct prefix of the labels' completions ("book", "book_", ...; the whole completions
    are never fed, nothing follows them) is one position after the prompt, seeing the prompt and its
    own ancestors only (a 4D additive mask), at the position it would have right after the prompt: so
    its logits equal those of a separate forward of prompt + label, and a prefix several labels share
    runs, and is normalised over the vocabulary, once (77 banking intents: 383 positions where one
    per label token would be 616). Returns input_ids, attention_mask (4D), position_ids,
    ``logit_positions`` ([R, 2]: the (row, position) of every prompt's last token and every trie
    position, the rows whose logits are needed), and, for every label token, ``token_rows`` (its row of
    logit_positions), ``targets`` (the token) and ``owner`` (its (row, label) index)."""
    from pipeline.label_scoring import prefix_nodes, tree_ancestry

    nodes = prefix_nodes(c[:-1] for c in label_ids)  # a completion's last token is only predicted
    index = {node: i for i, node in enumerate(nodes)}
    u = len(nodes)
    width = max(len(p) for p in prompts) + u
    rows = len(prompts)
    ids = torch.full((rows, width), pad_id, dtype=torch.long)
    pos = torch.zeros((rows, width), dtype=torch.long)
    allowed = torch.zeros((rows, width, width), dtype=torch.bool)
    tree = tree_ancestry(nodes, index)
    where, token_rows, targets, owner = [], [], [], []
    for b, prompt in enumerate(prompts):
        n = len(prompt)
        ids[b, :n] = torch.tensor(prompt)
        pos[b, :n] = torch.arange(n)
        allowed[b, :n, :n] = torch.ones(n, n, dtype=torch.bool).tril()
        if u:
            ids[b, n:n + u] = torch.tensor([node[-1] for node in nodes])
            pos[b, n:n + u] = torch.tensor([n + len(node) - 1 for node in nodes])
            allowed[b, n:n + u, :n] = True
            allowed[b, n:n + u, n:n + u] = tree
        first = len(where)  # this row's logit rows: the prompt's last position, then each node
        where.extend([(b, n - 1)] + [(b, n + i) for i in range(u)])
        for j, cand in enumerate(label_ids):
            for t, token in enumerate(cand):
                token_rows.append(first if t == 0 else first + 1 + index[tuple(cand[:t])])
                targets.append(token)
                owner.append((b, j))
        for q in range(n + u, width):  # padding attends to itself only (no all-masked rows)
            allowed[b, q, q] = True
    mask = torch.zeros((rows, 1, width, width), dtype=dtype).masked_fill(~allowed[:, None], torch.finfo(dtype).min)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "logit_positions": torch.tensor(where),
            "token_rows": torch.tensor(token_rows), "targets": torch.tensor(targets), "owner": torch.tensor(owner)}


class KDTrainer(SFTTrainer):
    """SFTTrainer whose loss is alpha*T^2*KD(teacher || student) + (1-alpha)*CE (see kd_loss, label_kd).

    Label level takes ``label_ids`` (each label's completion tokens, end of turn included),
    ``label_loss`` ("kl" or "logit_mse") and ``logit_scale`` (label_kd.teacher_logit_scale)."""

    def __init__(self, *args, kd_level: str = "token", temperature: float = 2.0, alpha: float = 0.5,
                 label_ids: list[list[int]] | None = None, label_loss: str = "kl", logit_scale: float = 1.0,
                 **kwargs):
        if kd_level not in ("token", "label"):
            raise ValueError(f"kd_level must be 'token' or 'label', got {kd_level!r}")
        if kd_level == "label" and not label_ids:
            raise ValueError("label-level KD needs label_ids")
        self.kd_level, self.temperature, self.alpha = kd_level, float(temperature), float(alpha)
        self.label_ids = label_ids or []
        firsts = [ids[0] for ids in self.label_ids]
        # the answer's first position tells the labels apart when their first tokens all differ
        self.first_ids = firsts if len(set(firsts)) == len(firsts) else None
        self.label_loss, self.logit_scale = label_loss, float(logit_scale)
        self._num_rows_in_batch: torch.Tensor | None = None
        super().__init__(*args, **kwargs)
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        add_target_logits_head(base)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns = list(self._signature_columns) + list(TOKEN_COLUMNS + LABEL_COLUMNS)

    def _get_num_items_in_batch(self, batch_samples, device):
        # The label-level KD term is one per row: count the rows of the accumulated batch (and of
        # every device) the same way transformers counts target tokens for the CE.
        if self.kd_level == "label" and batch_samples:
            rows = sum(int(b["label_probs"].shape[0]) for b in batch_samples)
            rows = torch.tensor(rows, device=device)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                rows = self.accelerator.gather(rows).sum()
            self._num_rows_in_batch = rows
        return super()._get_num_items_in_batch(batch_samples, device)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        if self.kd_level == "token":
            loss, parts = self._token_loss(model, inputs, num_items_in_batch)
        else:
            loss, parts = self._label_loss(model, inputs, num_items_in_batch)
        # As Trainer/SFTTrainer: num_items_in_batch counts every rank's tokens and DDP averages gradients
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        for key, value in parts.items():
            self._metrics[mode][key].append(self.accelerator.gather_for_metrics(value.detach()).mean().item())
        if mode == "train":
            n = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += n
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        if return_outputs:
            return loss, CausalLMOutput(loss=loss)
        return loss

    def _token_loss(self, model, inputs, num_items_in_batch):
        labels = inputs["labels"]
        out = model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=labels, target_logits=True
        )
        mask = labels[:, 1:] != -100
        targets = labels[:, 1:][mask]
        t_ids = inputs["teacher_ids"][:, 1:][mask]
        t_lps = inputs["teacher_logprobs"][:, 1:][mask]
        t_mask = inputs["teacher_mask"][:, 1:][mask]
        ce = token_ce(out.logits, targets)
        kl = sparse_topk_kl(out.logits, t_ids, t_lps, t_mask, self.temperature)
        has_teacher = t_mask.any(-1)
        num = num_items_in_batch if num_items_in_batch is not None else mask.sum()
        loss = kd_objective(kl, ce, has_teacher, alpha=self.alpha, temperature=self.temperature, num_items=num)
        kl_mean = (kl * has_teacher).sum() / has_teacher.sum().clamp(min=1)
        acc = (out.logits.argmax(-1) == targets).float().mean() if targets.numel() else ce.new_zeros(())
        return loss, {"kl": kl_mean, "ce": ce.mean() if ce.numel() else ce.new_zeros(()), "mean_token_accuracy": acc}

    # -- label level ------------------------------------------------------------------------------
    def student_label_logprobs(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log P(label) [B, L], CE summed over the target tokens, number of target tokens), from
        one forward of the student."""
        if self.first_ids is not None:
            return self._first_token_scores(model, inputs)
        return self._whole_label_scores(model, inputs)

    def _first_token_scores(self, model, inputs):
        """The labels begin with different tokens: the student's label distribution is read at the
        position that predicts the answer's first token (``answer_start`` - 1), from the same forward
        as the CE; as the teacher's first-token top-k would be. One forward of B rows."""
        labels = inputs["labels"]
        out = model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=labels, target_logits=True
        )
        mask = labels[:, 1:] != -100
        ce = token_ce(out.logits, labels[:, 1:][mask])
        # where the position answer_start-1 sits among the flattened target positions: the row's
        # offset plus the targets before it in the row. Read from answer_start, never from the
        # label mask, which also covers the prompt under completion_only_loss: false.
        before = torch.cumsum(mask.sum(-1), 0) - mask.sum(-1)
        rows = torch.arange(len(mask), device=mask.device)
        index = before + mask.cumsum(-1)[rows, inputs["answer_start"] - 1] - 1
        seq_lp = torch.log_softmax(out.logits[index].float(), dim=-1)[:, self.first_ids]
        return seq_lp, ce.sum(), mask.sum()

    def _whole_label_scores(self, model, inputs):
        """Labels that share a first token: one forward of each prompt and the labels' token trie
        (packed_label_batch). The CE is the teacher's label's own completion, read from the same
        forward."""
        ids, starts = inputs["input_ids"], inputs["answer_start"].tolist()
        prompts = [ids[b, : starts[b]].tolist() for b in range(len(ids))]  # the collator pads on the right
        pad = getattr(self.processing_class, "pad_token_id", None) or 0
        dtype = next(model.parameters()).dtype
        packed = packed_label_batch(prompts, self.label_ids, pad, dtype)
        device = ids.device
        out = model(input_ids=packed["input_ids"].to(device), attention_mask=packed["attention_mask"].to(device),
                    position_ids=packed["position_ids"].to(device), target_logits=True,
                    logit_positions=packed["logit_positions"].to(device))
        # one log-softmax per trie position; each label token reads its own position's
        token_lp = torch.log_softmax(out.logits.float(), -1)[packed["token_rows"].to(device), packed["targets"].to(device)]
        owner = packed["owner"].to(device)
        seq_lp = torch.zeros(len(ids), len(self.label_ids), device=device, dtype=token_lp.dtype)
        seq_lp = seq_lp.index_put((owner[:, 0], owner[:, 1]), token_lp, accumulate=True)
        mine = owner[:, 1] == inputs["label_index"][owner[:, 0]]
        return seq_lp, -token_lp[mine].sum(), mine.sum()

    def _label_loss(self, model, inputs, num_items_in_batch):
        seq_lp, ce_sum, n_targets = self.student_label_logprobs(model, inputs)
        batch = seq_lp.shape[0]
        probs = inputs["label_probs"]
        has_teacher = probs.sum(-1) > 0
        safe = torch.where(has_teacher[:, None], probs, torch.ones_like(probs))
        if self.label_loss == "logit_mse":
            kd = label_logit_mse(seq_lp, safe, self.logit_scale)
            temperature = 1.0
        else:
            kd = label_kl(seq_lp, safe, self.temperature)
            temperature = self.temperature
        kd = kd * has_teacher
        n_rows = self._num_rows_in_batch if (num_items_in_batch is not None and self._num_rows_in_batch is not None) else batch
        n_items = num_items_in_batch if num_items_in_batch is not None else n_targets
        if self.first_ids is None:  # the CE covers the teacher label's own tokens: a mean per row
            n_items = n_rows
        loss = label_kd_objective(
            kd, ce_sum, alpha=self.alpha, temperature=temperature, num_rows=n_rows, num_items=n_items
        )
        agree = (seq_lp.argmax(-1) == probs.argmax(-1)).float()[has_teacher]
        return loss, {
            "kd": kd.sum() / has_teacher.sum().clamp(min=1),
            "ce": ce_sum / torch.as_tensor(n_targets).clamp(min=1),
            "label_agreement": agree.mean() if agree.numel() else kd.new_zeros(()),
        }
