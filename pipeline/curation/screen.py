"""Screen one record: the filters that need no parse, the parse, then the filters on the parsed answer.

``Screener(task).screen(record)`` fills ``record.parsed`` / ``soft_label`` / ``soft_label_kind``
and returns a ``Verdict``: kept (with the training completion and its confidence) or dropped (with
the reason and a detail for rejected.jsonl).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from pipeline.config.output import label_code_map
from pipeline.config.task import TaskFolder
from pipeline.curation import filters
from pipeline.curation.parse import Parsed, label_mass_left_out, one_hot, parse_json, parse_label, parse_text
from pipeline.curation.soft_labels import label_distribution, reweight
from pipeline.errors import ConfigError
from pipeline.records import Record

INCOMPLETE_MASS = 0.01  # a soft label missing more of the teacher's probability than this is incomplete
INCOMPLETE_WARN_SHARE = 0.05  # warn when more than this share of the soft labels is incomplete


@dataclass
class Verdict:
    reason: str | None = None
    detail: str | None = None
    completion: str | None = None  # what the student learns to write
    span: tuple[int, int] | None = None  # where it sits in the teacher's answer
    label: str | None = None
    confidence: float | None = None  # ranks duplicates: the label probability or exp(mean logprob)
    repair: str | None = None
    soft_source: str | None = None  # label tasks: logprobs | no_logprobs | no_label_in_top_k
    soft_left_out: tuple[float, float] = (0.0, 0.0)  # parse.label_mass_left_out: (runner-up, outside top-k)


def load_json_validator(task: TaskFolder):
    """A jsonschema validator for the task's schema; a bad schema is a ConfigError now, not per record."""
    import jsonschema

    out = task.config.output
    where = "output.json_schema"
    schema: Any = out.json_schema
    if schema is None:
        path = task.file(out.json_schema_file)
        where = str(path)
        try:
            schema = json.loads(path.read_text(encoding="utf-8-sig"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the JSON Schema ({exc.strerror or exc}); fix output.json_schema_file") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); fix the schema file") from None
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigError(f"{where}: not a valid JSON Schema ({exc.message}); fix the schema") from None
    return cls(schema)


class Screener:
    def __init__(self, task: TaskFolder, label_weights: dict[str, float] | None = None):
        self.cfg = task.config
        self.label_weights = label_weights  # output.calibrate: the per-label weights (soft_labels.py)
        filters.check_patterns(self.cfg.filters)
        self.validator = load_json_validator(task) if self.cfg.output.kind == "json" else None

    def parse(self, record: Record) -> Parsed:
        out = self.cfg.output
        if out.kind == "label":
            return parse_label(record.completion, out.labels, out.answer_normalize())
        if out.kind == "json":
            return parse_json(record.completion, self.validator)
        return parse_text(record.completion, out.min_chars, out.max_chars)

    def screen(self, record: Record) -> Verdict:
        fcfg = self.cfg.filters
        for check in filters.PRE_PARSE:
            dropped = check(record, fcfg)
            if dropped:
                return Verdict(*dropped)
        parsed = self.parse(record)
        soft = None
        if self.cfg.output.kind == "label":
            out = self.cfg.output
            soft = label_distribution(record, out.labels, out.normalize.aliases, out.label_codes)
            # a scored soft label covers the whole label set: nothing can be left out of it
            left_out = (0.0, 0.0) if soft is not None and soft[2] == "scored" else \
                label_mass_left_out(record.logprobs, *((list(label_code_map(out.labels)), None) if out.label_codes
                                                        else (out.labels, out.normalize.aliases)))
            if soft is not None and (self.label_weights is not None or soft[2] == "scored"):
                # the label is the argmax of the (calibrated) distribution, even when the answer
                # text itself was not a label (its top-k still spelled the labels)
                dist = reweight(soft[0], self.label_weights) if self.label_weights else soft[0]
                soft = (dist, soft[1], soft[2])
                parsed = Parsed(value=max(dist, key=dist.get))
        if parsed.reason:
            return Verdict(parsed.reason, parsed.detail)
        record.parsed = parsed.value
        mean = filters.mean_token_logprob(record)
        confidence = math.exp(mean) if mean is not None else None
        verdict = Verdict(confidence=confidence, repair=parsed.repair, span=parsed.span)
        label_prob = None
        if self.cfg.output.kind == "label":
            labels = self.cfg.output.labels
            if soft is None:
                record.soft_label, record.soft_label_kind = one_hot(parsed.value, labels), "one_hot"
                verdict.soft_source = "no_label_in_top_k" if record.logprobs else "no_logprobs"
            else:
                record.soft_label, record.soft_label_kind = soft[0], soft[2]
                verdict.soft_source, verdict.soft_left_out = soft[2], left_out
                label_prob = soft[0][parsed.value] * soft[1]  # before renormalising: the teacher's own belief
                verdict.confidence = label_prob
            verdict.label, verdict.completion = parsed.value, parsed.value
        elif self.cfg.output.kind == "json":
            verdict.completion = record.completion[parsed.span[0] : parsed.span[1]]
        else:
            verdict.completion = parsed.value
        for check in filters.POST_PARSE:
            dropped = check(record, fcfg)
            if dropped:
                return Verdict(*dropped)
        dropped = filters.drop_low_confidence(record, fcfg, label_prob)
        if dropped:
            return Verdict(*dropped)
        return verdict


def soft_label_gaps(verdicts: list[Verdict]) -> dict[str, int]:
    """How many soft labels (from logprobs) miss more than INCOMPLETE_MASS of the teacher's belief:
    dropped silently, 304 of 449 rows of a 7-label task lost a runner-up label's mass."""
    soft = [v.soft_left_out for v in verdicts if v.soft_source == "logprobs"]
    runner_up = sum(r > INCOMPLETE_MASS for r, _ in soft)
    outside = sum(o > INCOMPLETE_MASS for _, o in soft)
    incomplete = sum(r > INCOMPLETE_MASS or o > INCOMPLETE_MASS for r, o in soft)
    return {"soft_labels": len(soft), "incomplete": incomplete, "runner_up_left_out": runner_up,
            "label_outside_top_k": outside}


def soft_label_warning(gaps: dict[str, int]) -> str | None:
    if not gaps["soft_labels"] or gaps["incomplete"] <= INCOMPLETE_WARN_SHARE * gaps["soft_labels"]:
        return None
    return (f"warning: curate: {gaps['incomplete']} of {gaps['soft_labels']} soft labels are incomplete "
            f"(>{INCOMPLETE_MASS:.0%} of the teacher's probability left out): in {gaps['runner_up_left_out']} a "
            "runner-up token starts several labels, so its mass could not be split (give labels distinct first "
            f"words, or aliases); in {gaps['label_outside_top_k']} a label was outside the teacher's top-k "
            "(raise teacher.top_logprobs)")
