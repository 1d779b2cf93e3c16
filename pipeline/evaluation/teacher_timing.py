"""Time a local teacher (``hf``) the way the student is timed: the same prompts, batch size,
machine and procedure (``student.time_label_scoring``), so the report's cost ratio compares like
for like. Given the student's folder, the two are timed on the same requests batch by batch,
interleaved (``student.paired_batch_times``): a machine whose load drifts during evaluate then slows
both alike, instead of whichever was timed second (on the demo the ratio read from two separate
passes ranged 3.8-5.0x for the same student). The ratio is the median of the pairs' ratios
(``student.paired_ratio``), so a burst of load during one batch moves one pair only. The teacher's
answers themselves come from the generate stage's cache; this only measures what serving it would cost.

Reads:  the teacher's local model folder (``teacher.model``; the embedded model's cached folder).
Writes: nothing.
"""
from __future__ import annotations

from collections.abc import Sequence

from pipeline.records import Message

# batches timed, each paired with the student's: on the demo, from one repeat to the next on an idle
# machine, a ratio of sums over 4 read 3.7-5.3x, the median pair ratio of 16 4.5-5.0x
# (student.paired_ratio); the 16 teacher batches cost the demo about 30 s
TIMED_BATCHES = 16


def time_local_teacher(model_name: str, prompts: Sequence[Sequence[Message]], labels: Sequence[str], *,
                       batch_size: int, latency_samples: int, student=None) -> dict:
    """{"seconds_per_request" (batched), "latencies_s" (one request at a time), "batch_size",
    "timed_requests"}; with ``student`` (``student.label_scorer``'s (score, texts) for the same
    prompts) also "student_seconds_per_request", the student's batched time on the same requests,
    interleaved with the teacher's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.devices import placement_for
    from pipeline.evaluation.student import (
        paired_batch_times,
        paired_ratio,
        single_latencies,
        time_label_scoring,
    )
    from pipeline.label_scoring import teacher_label_logprobs
    from pipeline.local_models import resolve_model_path

    path = resolve_model_path(model_name)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    where = placement_for(path)  # as the hf teacher and the student are placed
    model = where.place(AutoModelForCausalLM.from_pretrained(path, local_files_only=True,
                                                             **where.from_pretrained_kwargs())).eval()
    sample = list(prompts[: batch_size * TIMED_BATCHES])
    texts = [tokenizer.apply_chat_template([m.model_dump() for m in p], add_generation_prompt=True, tokenize=False)
             for p in sample]
    def score(batch):
        return teacher_label_logprobs(model, tokenizer, batch, labels)

    n = max(len(texts), 1)
    if student is None or not texts:
        _, batch_times, latencies = time_label_scoring(score, texts, batch_size=batch_size,
                                                       latency_samples=latency_samples)
        return {"seconds_per_request": sum(batch_times) / n, "latencies_s": latencies,
                "batch_size": batch_size, "timed_requests": len(texts)}
    student_score, student_texts = student
    teacher_times, student_times = paired_batch_times(score, student_score, texts, student_texts, batch_size=batch_size)
    # the teacher's time is its mean; the student's is that over the median paired ratio, so that the
    # two costs divide to it (a burst of load during one batch moves one pair, not the ratio)
    of_sums = sum(teacher_times) / max(sum(student_times), 1e-12)
    ratio = paired_ratio(teacher_times, student_times) or of_sums
    teacher_s = sum(teacher_times) / n
    return {"seconds_per_request": teacher_s, "student_seconds_per_request": teacher_s / ratio,
            "latencies_s": single_latencies(score, texts[:latency_samples]), "batch_size": batch_size,
            "timed_requests": len(texts), "interleaved": True, "paired_batches": len(teacher_times),
            "paired_ratio": ratio, "ratio_of_sums": of_sums}
