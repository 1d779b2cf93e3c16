"""The report's cost ratio times the student and a local teacher on the same requests, batch by batch,
interleaved: a machine that slows down during evaluate must slow both alike."""
from __future__ import annotations

import time

import pytest

from pipeline.evaluation.student import paired_batch_times, paired_ratio, time_label_scoring


def drifting(base_s: float, clock: dict, log: list, name: str):
    """A scorer that takes base_s per batch, three times that once the machine has served 10 calls."""
    def score(batch):
        clock["calls"] += 1
        log.append(name)
        time.sleep(base_s * (1.0 if clock["calls"] <= 10 else 3.0))
        return [{} for _ in batch]
    return score


def test_interleaved_timing_keeps_the_ratio_when_the_machine_slows_down_half_way():
    clock, log = {"calls": 0}, []
    teacher, student = drifting(0.02, clock, log, "teacher"), drifting(0.005, clock, log, "student")
    texts = [f"request {i}" for i in range(16)]  # 8 batches of 2
    t, s = paired_batch_times(teacher, student, texts, texts, batch_size=2)
    assert len(t) == len(s) == 8
    assert log[2:6] == ["teacher", "student", "student", "teacher"]  # after the warm-ups, alternating order
    assert sum(t) / sum(s) == pytest.approx(4.0, rel=0.25)
    # the same drift, the two timed one after the other: the teacher is timed slow, the ratio 12
    clock["calls"] = 0
    _, s_seq, _ = time_label_scoring(student, texts, batch_size=2, latency_samples=0)
    _, t_seq, _ = time_label_scoring(teacher, texts, batch_size=2, latency_samples=0)
    assert sum(t_seq) / sum(s_seq) > 8


def test_a_burst_of_load_during_one_batch_moves_one_pair_not_the_ratio():
    """The cost ratio is the median of the pairs' ratios: the machine stalls for a while during one
    student batch (another process, the host), which a ratio of sums reads as a cheaper teacher."""
    clock, log = {"calls": 0}, []
    teacher, student = drifting(0.02, clock, log, "teacher"), drifting(0.005, clock, log, "student")
    stalled = {"calls": 0, "done": False}

    def student_with_a_stall(batch):
        stalled["calls"] += 1
        if stalled["calls"] == 4:  # the third timed student batch (the first call is the warm-up)
            stalled["done"] = True
            time.sleep(0.1)
        return student(batch)

    clock["calls"] = -100  # no drift here: the stall alone
    texts = [f"request {i}" for i in range(16)]
    t, s = paired_batch_times(teacher, student_with_a_stall, texts, texts, batch_size=2)
    assert stalled["done"] and max(s) > 0.09
    assert sum(t) / sum(s) < 2.5  # the stall drags the ratio of sums down
    assert paired_ratio(t, s) == pytest.approx(4.0, rel=0.25)
    assert paired_ratio([], []) is None
