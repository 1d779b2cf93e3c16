"""Stop training when the student's agreement with its teacher on held-out inputs stops improving.

Label tasks only: every ``eval_steps`` optimiser steps the student labels the curated eval split
(the same forward the loss uses, ``KDTrainer.student_label_logprobs``) and is compared with the
teacher's label (the argmax of its soft label). Agreement is coarse (one eval row is 1/n) and
often ties, so a tie goes to the lower held-out KL(teacher || student) over the label set. The
best weights are kept in memory (a copy of the
state dict: cheaper than a checkpoint on disk, and the student is small), training stops after
``patience`` measurements without a new best, and the best weights are put back at the end. The
measurements form the learning curve the report plots (agreement vs steps, step 0 included).
"""
from __future__ import annotations

import torch
from transformers import TrainerCallback


class AgreementEarlyStopping(TrainerCallback):
    def __init__(self, trainer, eval_rows: list[dict], *, eval_steps: int, patience: int, batch_size: int = 32):
        self.trainer, self.rows = trainer, [r for r in eval_rows if sum(r["label_probs"]) > 0]
        self.eval_steps, self.patience, self.batch_size = eval_steps, patience, batch_size
        self.curve: list[dict[str, float]] = []
        self.best: float | None = None
        self.best_step = 0
        self._best_kl = float("inf")
        self._best_state: dict[str, torch.Tensor] | None = None
        self._since_best = 0

    def agreement(self) -> tuple[float, float]:
        """(share of eval rows where the student's label is the teacher's, mean KL at T=1)."""
        from pipeline.training.label_kd import label_kl

        model = self.trainer.model
        was_training = model.training
        model.eval()
        agree, kl = 0, 0.0
        device = next(model.parameters()).device
        with torch.no_grad():
            for start in range(0, len(self.rows), self.batch_size):
                batch = self.trainer.data_collator(self.rows[start:start + self.batch_size])
                batch = {k: v.to(device) for k, v in batch.items()}
                seq_lp, _, _ = self.trainer.student_label_logprobs(model, batch)
                agree += int((seq_lp.argmax(-1) == batch["label_probs"].argmax(-1)).sum())
                kl += float(label_kl(seq_lp.float(), batch["label_probs"], 1.0).sum())
        model.train(was_training)
        n = max(len(self.rows), 1)
        return agree / n, kl / n

    def _measure(self, step: int, control=None) -> None:
        value, kl = self.agreement()
        self.curve.append({"step": step, "agreement": value, "kl": kl})
        if self.best is None or (value, -kl) > (self.best, -self._best_kl):
            self.best, self._best_kl, self.best_step, self._since_best = value, kl, step, 0
            self._best_state = {k: v.detach().clone() for k, v in self.trainer.model.state_dict().items()}
        else:
            self._since_best += 1
            if control is not None and self._since_best >= self.patience:
                control.should_training_stop = True

    def on_train_begin(self, args, state, control, **kwargs):
        if self.rows and not self.curve:
            self._measure(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.rows and state.global_step % self.eval_steps == 0:
            self._measure(state.global_step, control)

    def on_train_end(self, args, state, control, **kwargs):
        if not self.rows:
            return
        if self.curve[-1]["step"] != state.global_step:
            self._measure(state.global_step)
        if self._best_state is not None and self.best_step != state.global_step:
            self.trainer.model.load_state_dict(self._best_state)

    def summary(self) -> dict:
        return {"curve": self.curve, "best_agreement": self.best, "best_step": self.best_step,
                "eval_rows": len(self.rows)}
