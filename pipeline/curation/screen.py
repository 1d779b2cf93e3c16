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

from pipeline.config.task import TaskFolder
from pipeline.curation import filters
from pipeline.curation.parse import Parsed, one_hot, parse_json, parse_label, parse_text
from pipeline.curation.soft_labels import label_distribution, reweight
from pipeline.errors import ConfigError
from pipeline.records import Record


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
            schema = json.loads(path.read_text(encoding="utf-8"))
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
            return parse_label(record.completion, out.labels, out.normalize)
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
            soft = label_distribution(record, out.labels, out.normalize.aliases)
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
                verdict.soft_source = soft[2]
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
