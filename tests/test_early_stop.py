"""AgreementEarlyStopping's choice of weights, on scripted measurements: a later best replaces the
starting weights only when it wins beyond chance on the eval rows where the two differ."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from pipeline.training.early_stop import AgreementEarlyStopping


class ScriptedTrainer:
    """Each measurement answers the next scripted list of student labels; the model's one weight is
    the step it was measured at, so the restored weights say which step was kept."""

    def __init__(self, answers: list[list[int]], label_loss: str = "kl"):
        self.model = torch.nn.Linear(1, 1, bias=False)
        self.answers = iter(answers)
        self.label_loss, self.logit_scale, self.temperature = label_loss, 1 / math.log(2), 1.0  # targets +-1

    def data_collator(self, rows):
        return {"label_probs": torch.tensor([r["label_probs"] for r in rows])}

    def student_label_logprobs(self, model, batch):
        picks, gap = next(self.answers)  # the student's labels, and its logit margin for them
        return (torch.nn.functional.one_hot(torch.tensor(picks), 2).float() * gap).log_softmax(-1), None, None


def run(teacher: list[int], answers: list[list[int]], label_loss: str = "kl", **kw) -> tuple[AgreementEarlyStopping, float]:
    rows = [{"label_probs": [0.8, 0.2] if t == 0 else [0.2, 0.8]} for t in teacher]
    trainer = ScriptedTrainer(answers, label_loss)
    stop = AgreementEarlyStopping(trainer, rows, eval_steps=10, patience=5, batch_size=len(rows), **kw)
    control = SimpleNamespace(should_training_stop=False)
    for step in range(0, 10 * len(answers), 10):
        with torch.no_grad():
            trainer.model.weight.fill_(step)
        state = SimpleNamespace(global_step=step)
        (stop.on_train_begin if step == 0 else stop.on_step_end)(None, state, control)
    stop.on_train_end(None, state, control)
    return stop, float(trainer.model.weight.detach())


TEACHER = [0] * 15 + [1] * 15  # 30 eval rows


CALIBRATED = math.log(4)  # the teacher's own margin (0.8 / 0.2): KL 0 on a row the student gets right


def test_a_later_best_that_wins_by_two_rows_and_is_further_from_the_teacher_gives_the_start_back():
    start = [0] * 10 + [1] * 5 + [1] * 10 + [0] * 5  # 20 of 30 right
    later = start[:]
    later[10], later[11] = 0, 0  # two more right: 22 of 30, but overconfident
    stop, weight = run(TEACHER, [(start, CALIBRATED), (later, 8.0)])
    assert [p["agreement"] for p in stop.curve] == pytest.approx([20 / 30, 22 / 30])
    got = stop.against_start
    assert {k: got[k] for k in ("best_step", "won", "lost", "beyond_chance", "kept")} == {
        "best_step": 10, "won": 2, "lost": 0, "beyond_chance": False, "kept": "start"}
    assert got["loss_best"] > got["loss_start"]
    assert stop.summary()["best_step"] == 0 and stop.best == pytest.approx(20 / 30) and weight == 0.0

    # the same two rows at the teacher's own margin: closer by KL as well, so the later step stays
    stop, weight = run(TEACHER, [(start, CALIBRATED), (later, CALIBRATED)])
    assert stop.against_start["kept"] == "best" and stop.summary()["best_step"] == 10 and weight == 10.0


def test_a_later_best_that_wins_beyond_chance_is_kept_and_the_switch_turns_the_rule_off():
    start = [1] * 30  # 15 of 30 right
    later = TEACHER[:]
    later[0] = 1  # 29 of 30 right: 14 won, 0 lost
    stop, weight = run(TEACHER, [(start, CALIBRATED), (later, 8.0), (start, CALIBRATED)])
    assert stop.against_start["kept"] == "best" and stop.against_start["won"] == 14
    assert stop.against_start["beyond_chance"] and stop.summary()["best_step"] == 10 and weight == 10.0

    small = start[:]
    small[:2] = [0, 0]  # two more right, overconfident: given back, unless the rule is off
    stop, weight = run(TEACHER, [(start, CALIBRATED), (small, 8.0)], require_gain_beyond_chance=False)
    assert stop.against_start["kept"] == "best" and not stop.against_start["beyond_chance"] and weight == 10.0


def test_a_logit_matched_student_is_judged_by_its_own_loss_not_by_a_kl_that_flattening_lowers():
    """With label_loss logit_mse (targets: the teacher's centred log-odds at unit spread, here +-1) the
    start has the margin that fits them best; a later step that wins 2 rows and flattens its margin is
    closer by the KL at T=1 (which favours a flat student against this flat teacher) but further by
    the loss it trains on: the start is kept."""
    start = [0] * 10 + [1] * 5 + [1] * 10 + [0] * 5  # 20 of 30 right
    later = start[:]
    later[10], later[11] = 0, 0  # 22 of 30
    stop, weight = run(TEACHER, [(start, 2 / 3), (later, 0.2)], label_loss="logit_mse")
    first, second = stop.curve
    assert second["kl"] < first["kl"] and second["loss"] > first["loss"]
    assert stop.against_start["kept"] == "start" and weight == 0.0


def test_a_run_whose_start_stays_best_records_no_comparison():
    stop, weight = run(TEACHER, [(TEACHER, CALIBRATED), ([1] * 30, CALIBRATED)])
    assert stop.against_start is None and stop.summary()["best_step"] == 0 and weight == 0.0


def test_the_report_names_the_saved_step_and_why_the_start_was_kept():
    from pipeline.evaluation.report import learning_sentence

    curve = [{"step": 0, "agreement": 0.675, "kl": 0.12}, {"step": 10, "agreement": 0.683, "kl": 0.13}]
    vs = {"best_step": 10, "won": 1, "lost": 0, "beyond_chance": False, "loss_start": 0.12, "loss_best": 0.13, "kept": "start"}
    text = learning_sentence({"learning_curve": curve, "learning_kept": {"step": 0, "against_start": vs}})
    assert text.startswith("Early stopping saved the weights of step 0 (67.5% held-out agreement): step 10 measured 68.3%")
    assert "won 1 and lost 0" in text and "within chance" in text
    plain = learning_sentence({"learning_curve": curve, "learning_kept": {"step": 10, "against_start": None}})
    assert plain == "Early stopping saved the weights of step 10 (68.3% held-out agreement)."
    assert learning_sentence({"learning_curve": None, "learning_kept": None}) is None
