"""KDTrainer: TRL's SFTTrainer with a knowledge-distillation loss on stored teacher logprobs.

Everything SFTTrainer does (SFTConfig, PEFT, accelerate/DDP/FSDP/DeepSpeed, checkpoints, logging)
is kept; only the loss changes, and the collator carries the teacher's side columns (see
pipeline/training/data.py for their shape) next to input_ids and labels.

token level: one forward; the student's logits are projected only at target positions (the full
  (batch, seq, vocab) logits are never built), then kd_loss.sparse_topk_kl + CE.
label level: the prompt answered with each label is stacked under the batch, so one forward (DDP
  needs exactly one per backward) gives both the CE on the teacher's answer and the student's
  sequence logprob of every label; then label_kd.label_kl.
"""
from __future__ import annotations

import functools
from typing import Any

import torch
from transformers.modeling_outputs import CausalLMOutput
from trl import SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from pipeline.training.kd_loss import kd_objective, sparse_topk_kl, token_ce
from pipeline.training.label_kd import label_kd_objective, label_kl

TOKEN_COLUMNS = ("kd_pos", "kd_ids", "kd_logprobs")
LABEL_COLUMNS = ("cand_input_ids", "cand_labels", "label_probs")


class KDCollator:
    """Pads input_ids/labels with TRL's collator, then the teacher's side columns to the same length."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.base = DataCollatorForLanguageModeling(pad_token_id=pad_token_id, pad_to_multiple_of=pad_to_multiple_of)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.base([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples])
        if "kd_pos" in examples[0]:
            batch.update(self._token_columns(examples, batch["input_ids"].shape[1]))
        if "cand_input_ids" in examples[0]:
            batch.update(self._label_columns(examples))
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

    def _label_columns(self, examples) -> dict[str, torch.Tensor]:
        flat = [
            {"input_ids": ids, "labels": lab}
            for e in examples
            for ids, lab in zip(e["cand_input_ids"], e["cand_labels"])
        ]
        cand = self.base(flat)
        return {
            "cand_input_ids": cand["input_ids"],
            "cand_attention_mask": cand["attention_mask"],
            "cand_labels": cand["labels"],
            "label_probs": torch.tensor([e["label_probs"] for e in examples], dtype=torch.float32),
        }


def add_target_logits_head(model) -> None:
    """Let ``model(..., labels=labels, target_logits=True)`` return logits only at positions whose
    next-token label is not -100, as [N, vocab], in (batch, position) order. Patched on the
    instance like TRL's fused head, so DDP/FSDP/PEFT wrappers still run their own forward."""
    previous_forward = model.forward
    text_config = model.config.get_text_config()
    softcap = getattr(text_config, "final_logit_softcapping", None)
    logit_scale = getattr(text_config, "logit_scale", None)

    @functools.wraps(type(model).forward)
    def forward(self, *args, target_logits=False, labels=None, **kwargs):
        if not target_logits:
            if labels is not None:
                kwargs["labels"] = labels
            return previous_forward(*args, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        mask = labels[:, 1:] != -100
        # Call the head as a module (not its weight): DeepSpeed ZeRO-3 and FSDP gather parameters in
        # module hooks, and keep them gathered for the backward.
        logits = self.get_output_embeddings()(hidden[mask])
        if logit_scale is not None:
            logits = logits * logit_scale
        if softcap is not None:  # Gemma 2/3: the model's own forward applies this after the head
            logits = torch.tanh(logits / softcap) * softcap
        return CausalLMOutput(logits=logits.float())

    model.forward = forward.__get__(model)


def label_first_token_ids(cand_ids: torch.Tensor, cand_labels: torch.Tensor, n_labels: int) -> torch.Tensor | None:
    """[B, L] the first answer token of each label's candidate, or None when two labels of a row
    begin with the same token (then only the whole label strings tell them apart)."""
    rows = cand_ids.shape[0] // max(n_labels, 1)
    if rows == 0 or n_labels < 2:
        return None
    answer = cand_labels != -100
    start = answer.float().argmax(-1)  # first answer position of each candidate
    ids = cand_ids.gather(-1, start[:, None]).view(rows, n_labels)
    distinct = all(len(set(r.tolist())) == n_labels for r in ids)
    return ids if distinct else None


class KDTrainer(SFTTrainer):
    """SFTTrainer whose loss is alpha*T^2*KL(teacher || student) + (1-alpha)*CE (see kd_loss)."""

    def __init__(self, *args, kd_level: str = "token", temperature: float = 2.0, alpha: float = 0.5, **kwargs):
        if kd_level not in ("token", "label"):
            raise ValueError(f"kd_level must be 'token' or 'label', got {kd_level!r}")
        self.kd_level, self.temperature, self.alpha = kd_level, float(temperature), float(alpha)
        self._num_rows_in_batch: torch.Tensor | None = None
        super().__init__(*args, **kwargs)
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        add_target_logits_head(base)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns = list(self._signature_columns) + list(TOKEN_COLUMNS + LABEL_COLUMNS)

    def _get_num_items_in_batch(self, batch_samples, device):
        # The label-level KL is one term per row: count the rows of the accumulated batch (and of
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

    def _label_loss(self, model, inputs, num_items_in_batch):
        first_ids = label_first_token_ids(inputs["cand_input_ids"], inputs["cand_labels"], inputs["label_probs"].shape[1])
        if first_ids is not None:
            return self._first_token_label_loss(model, inputs, num_items_in_batch, first_ids)
        return self._whole_label_loss(model, inputs, num_items_in_batch)

    def _first_token_label_loss(self, model, inputs, num_items_in_batch, first_ids):
        """When the labels begin with different tokens, the student's label distribution is read at the
        answer's first token, from the same forward as the CE: as the teacher's soft label is read
        from its first token's top-k. One forward of B rows instead of B*(1+L) (bench/kd_vs_sft.py)."""
        labels = inputs["labels"]
        out = model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=labels, target_logits=True
        )
        mask = labels[:, 1:] != -100
        targets = labels[:, 1:][mask]
        ce = token_ce(out.logits, targets)
        per_row = mask.sum(-1)
        first = torch.cumsum(per_row, 0) - per_row  # index of each row's first answer token in out.logits
        seq_lp = torch.log_softmax(out.logits[first], dim=-1).gather(-1, first_ids)  # [B, L]
        return self._label_objective(seq_lp, ce.sum(), inputs, num_items_in_batch)

    def _whole_label_loss(self, model, inputs, num_items_in_batch):
        ids, cand_ids = inputs["input_ids"], inputs["cand_input_ids"]
        width = max(ids.shape[1], cand_ids.shape[1])

        def widen(t, value):
            return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

        pad_id = self.processing_class.pad_token_id if hasattr(self.processing_class, "pad_token_id") else 0
        stacked_ids = torch.cat([widen(ids, pad_id), widen(cand_ids, pad_id)])
        stacked_mask = torch.cat([widen(inputs["attention_mask"], 0), widen(inputs["cand_attention_mask"], 0)])
        stacked_labels = torch.cat([widen(inputs["labels"], -100), widen(inputs["cand_labels"], -100)])
        out = model(input_ids=stacked_ids, attention_mask=stacked_mask, labels=stacked_labels, fused_lm_head=True)
        batch = ids.shape[0]
        log_probs = out.log_probs  # [rows, width-1], zero where the label is -100
        ce_sum = -log_probs[:batch].sum()
        probs = inputs["label_probs"]
        seq_lp = log_probs[batch:].sum(-1).view(batch, probs.shape[1])
        return self._label_objective(seq_lp, ce_sum, inputs, num_items_in_batch)

    def _label_objective(self, seq_lp, ce_sum, inputs, num_items_in_batch):
        batch = seq_lp.shape[0]
        probs = inputs["label_probs"]
        has_teacher = probs.sum(-1) > 0
        kl = label_kl(seq_lp, torch.where(has_teacher[:, None], probs, torch.ones_like(probs)), self.temperature)
        kl = kl * has_teacher
        n_items = num_items_in_batch if num_items_in_batch is not None else (inputs["labels"][:, 1:] != -100).sum()
        n_rows = self._num_rows_in_batch if (num_items_in_batch is not None and self._num_rows_in_batch is not None) else batch
        loss = label_kd_objective(
            kl, ce_sum, alpha=self.alpha, temperature=self.temperature, num_rows=n_rows, num_items=n_items
        )
        agree = (seq_lp.argmax(-1) == probs.argmax(-1)).float()[has_teacher]
        return loss, {
            "kl": kl.sum() / has_teacher.sum().clamp(min=1),
            "ce": ce_sum / (inputs["labels"][:, 1:] != -100).sum().clamp(min=1),
            "label_agreement": agree.mean() if agree.numel() else kl.new_zeros(()),
        }
