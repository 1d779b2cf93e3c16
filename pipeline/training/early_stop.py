"""Stop training when the student's agreement with its teacher on held-out inputs stops improving.

Label tasks only: every ``eval_steps`` optimiser steps the student labels the curated eval split
(the same forward the loss uses, ``KDTrainer.student_label_logprobs``) and is compared with the
teacher's label (the argmax of its soft label). Agreement is coarse (one eval row is 1/n) and
often ties, so a tie goes to the lower held-out loss: the KD term the student trains on (``label_kl``
at the trainer's temperature, or ``label_logit_mse`` at its scale; the KL at T=1 is recorded too). The
best weights are kept in memory (a copy of the
state dict: cheaper than a checkpoint on disk, and the student is small), training stops after
``patience`` measurements without a new best, and the best weights are put back at the end. The
measurements form the learning curve the report plots (agreement vs steps, step 0 included).

The best of several noisy measurements is biased upward, and fine-tuning a student whose head was
fitted first (``label_head: probe``) rarely beats that start: on every bench here the first measurement
after it was lower. So at the end a later best replaces the starting weights only when it wins beyond
chance on the eval rows where the two differ (``metrics.mcnemar_beyond_chance``, about 2 sd), or
else also has a lower held-out loss (``early_stopping.require_gain_beyond_chance``). A best that won
by 1 row of 120 with a higher loss otherwise cost 3 points on 500 real snippets. The loss, not the KL
at T=1: a logit-matched student's KL against a flat teacher falls by flattening alone (plain SGD on
the demo lowered it from 0.120 to 0.062 with 11 rows won and 10 lost).
"""
from __future__ import annotations

import torch
from transformers import TrainerCallback


class AgreementEarlyStopping(TrainerCallback):
    def __init__(self, trainer, eval_rows: list[dict], *, eval_steps: int, patience: int, batch_size: int = 32,
                 require_gain_beyond_chance: bool = True):
        self.trainer, self.rows = trainer, [r for r in eval_rows if sum(r["label_probs"]) > 0]
        self.eval_steps, self.patience, self.batch_size = eval_steps, patience, batch_size
        self.require_gain = require_gain_beyond_chance
        self.curve: list[dict[str, float]] = []
        self.best: float | None = None
        self.best_step = 0
        self._best_loss = float("inf")
        self._best_state: dict[str, torch.Tensor] | None = None
        self._best_right: list[bool] = []
        self._start: tuple[int, float, float, list[bool], dict[str, torch.Tensor]] | None = None
        self.against_start: dict | None = None
        self._since_best = 0

    def agreement(self) -> tuple[float, float, float, list[bool]]:
        """(share of eval rows where the student's label is the teacher's, mean held-out loss (the KD
        term it trains on), mean KL at T=1, the first per row)."""
        from pipeline.training.label_kd import label_kl, label_logit_mse

        model = self.trainer.model
        was_training = model.training
        model.eval()
        right: list[bool] = []
        kl = loss = 0.0
        objective = getattr(self.trainer, "label_loss", "kl")
        device = next(model.parameters()).device
        with torch.no_grad():
            for start in range(0, len(self.rows), self.batch_size):
                batch = self.trainer.data_collator(self.rows[start:start + self.batch_size])
                batch = {k: v.to(device) for k, v in batch.items()}
                seq_lp, _, _ = self.trainer.student_label_logprobs(model, batch)
                right += (seq_lp.argmax(-1) == batch["label_probs"].argmax(-1)).tolist()
                probs = batch["label_probs"]
                kl += float(label_kl(seq_lp.float(), probs, 1.0).sum())
                loss += float((label_logit_mse(seq_lp.float(), probs, self.trainer.logit_scale)
                               if objective == "logit_mse"
                               else label_kl(seq_lp.float(), probs, getattr(self.trainer, "temperature", 1.0))).sum())
        model.train(was_training)
        n = max(len(self.rows), 1)
        return sum(right) / n, loss / n, kl / n, right

    def _measure(self, step: int, control=None) -> None:
        value, loss, kl, right = self.agreement()
        self.curve.append({"step": step, "agreement": value, "loss": loss, "kl": kl})
        if self.best is None or (value, -loss) > (self.best, -self._best_loss):
            self.best, self._best_loss, self.best_step, self._since_best = value, loss, step, 0
            self._best_state = {k: v.detach().clone() for k, v in self.trainer.model.state_dict().items()}
            self._best_right = right
            if self._start is None:
                self._start = (step, value, loss, right, self._best_state)
        else:
            self._since_best += 1
            if control is not None and self._since_best >= self.patience:
                control.should_training_stop = True

    def _keep_start_unless_beyond_chance(self) -> None:
        """Put the starting weights back when the best later step's gain over them could be chance and
        its held-out loss is no lower."""
        from pipeline.evaluation.metrics import mcnemar_beyond_chance

        if self._start is None or self.best_step == self._start[0]:
            return
        step, value, loss, right, state = self._start
        won = sum(b and not a for a, b in zip(right, self._best_right, strict=True))
        lost = sum(a and not b for a, b in zip(right, self._best_right, strict=True))
        beyond = mcnemar_beyond_chance(won, lost)
        keep = beyond or self._best_loss < loss or not self.require_gain
        self.against_start = {"best_step": self.best_step, "won": won, "lost": lost, "beyond_chance": beyond,
                              "loss_start": loss, "loss_best": self._best_loss, "kept": "best" if keep else "start"}
        if not keep:
            self.best, self.best_step, self._best_loss, self._best_state = value, step, loss, state

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
        self._keep_start_unless_beyond_chance()
        if self._best_state is not None and self.best_step != state.global_step:
            self.trainer.model.load_state_dict(self._best_state)

    def summary(self) -> dict:
        return {"curve": self.curve, "best_agreement": self.best, "best_step": self.best_step,
                "eval_rows": len(self.rows), "against_start": self.against_start}
