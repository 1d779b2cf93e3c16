"""Parse a teacher's answer by the task's output kind: a label (with its soft label), JSON, or text.

Each parser returns ``Parsed(value, reason)``: ``reason`` is None when the answer is usable, else a
short machine-readable reason that ends up in rejected.jsonl and the manifest's counts.

Soft labels: P(label) is read from the top-k logprobs of the answer's first token(s). A candidate
token contributes its probability to the one label its text (case-folded, spaces and punctuation
stripped) is a prefix of; when several labels share that prefix and the candidate is the token the
teacher actually emitted, the next position's top-k splits it further (multi-token labels). The
probabilities are renormalised over the label set. Without logprobs the soft label is one-hot and
marked ``one_hot``.
"""
from __future__ import annotations

import json
import math
import re
import string
from dataclasses import dataclass
from typing import Any

from pipeline.config.output import NormalizeConfig
from pipeline.records import TokenPosition

_PUNCT = str.maketrans("", "", string.punctuation + "“”‘’«»…")
_FENCE = re.compile(r"```[ \t]*[A-Za-z0-9_+-]*[ \t]*\r?\n?(.*?)\r?\n?[ \t]*```", re.DOTALL)
# How many leading tokens may be pure whitespace/punctuation (" ", "\n", '"', "**") before the label.
_MAX_LEAD_TOKENS = 3


@dataclass(frozen=True)
class Parsed:
    value: Any = None
    reason: str | None = None
    detail: str | None = None  # the human-readable why, for rejected.jsonl
    repair: str | None = None  # json: "code_fence" or "surrounding_prose" when wrapping was removed
    span: tuple[int, int] | None = None  # the characters of the answer the value came from


def normalise_label(text: str, norm: NormalizeConfig) -> str:
    if norm.first_line_only:
        text = text.strip().split("\n", 1)[0] if text.strip() else ""
    if norm.strip:
        text = text.strip()
    if norm.lowercase:
        text = text.casefold()
    if norm.strip_punctuation:
        text = text.translate(_PUNCT)
    return " ".join(text.split()) if norm.strip else text


def _label_lookup(labels: list[str], norm: NormalizeConfig) -> dict[str, str]:
    lookup = {normalise_label(label, norm): label for label in labels}
    for alias, label in norm.aliases.items():
        lookup.setdefault(normalise_label(alias, norm), label)
    return lookup


def parse_label(text: str, labels: list[str], norm: NormalizeConfig) -> Parsed:
    """The label the answer names: an exact match after normalisation, or (``norm.prefix_match``)
    the one label the answer starts with, as a whole word ("Positive. The review..." -> positive)."""
    answer = normalise_label(text, norm)
    lookup = _label_lookup(labels, norm)
    if answer in lookup:
        return Parsed(lookup[answer])
    if norm.prefix_match and answer:
        hits = [key for key in lookup if key and re.match(re.escape(key) + r"(?!\w)", answer)]
        longest = max(hits, key=len) if hits else None
        if longest is not None:
            return Parsed(lookup[longest])
    shown = text.strip()[:60]
    return Parsed(reason="label_unknown", detail=f"answer {shown!r} is none of {labels}")


def _token_key(token: str) -> str:
    return token.casefold().translate(_PUNCT).strip()


def _label_mass(positions: list[TokenPosition], pos: int, keys: dict[str, str], prefix: str) -> dict[str, float]:
    """P(label | the answer so far spells ``prefix``), from position ``pos`` on."""
    mass: dict[str, float] = {}
    if pos >= len(positions):
        return mass
    here = positions[pos]
    candidates = here.top or [here]
    for cand in candidates:
        key = _token_key(cand.token)
        # a token that starts with a space starts a new word of a multi-word label
        spelled = f"{prefix} {key}".strip() if prefix and cand.token[:1].isspace() else prefix + key
        if not spelled:
            continue
        matches = [k for k in keys if k.startswith(spelled)]
        if not matches:
            continue
        p = math.exp(cand.logprob)
        if len({keys[k] for k in matches}) == 1:  # one label (an alias of it counts as the same)
            label = keys[matches[0]]
            mass[label] = mass.get(label, 0.0) + p
        elif cand.token == here.token:  # several labels share this prefix: the next token decides
            further = _label_mass(positions, pos + 1, {k: keys[k] for k in matches}, spelled)
            if not further and spelled in keys:  # the answer ended here ("no" vs "not sure")
                further = {keys[spelled]: 1.0}
            for label, q in further.items():
                mass[label] = mass.get(label, 0.0) + p * q
        # an ambiguous alternative the teacher did not emit has no continuation to read: its mass is left out
    return mass


def _label_key(label: str) -> str:
    return " ".join(label.casefold().translate(_PUNCT).split())


def soft_label_from_logprobs(
    positions: list[TokenPosition] | None, labels: list[str], aliases: dict[str, str] | None = None
) -> tuple[dict[str, float], float] | None:
    """(P(label) renormalised over the label set, the raw top-k mass that fell on labels), or None
    when there are no logprobs or no top-k candidate spells any label. Tokens match case-insensitively
    and with or without a leading space (" Positive", "positive" and "POS"+"ITIVE" all count)."""
    if not positions:
        return None
    keys = _label_keys(labels, aliases)
    mass = _label_mass(positions, _first_label_position(positions), keys, "")
    total = sum(mass.values())
    if total <= 0:
        return None
    return {label: mass.get(label, 0.0) / total for label in labels}, min(total, 1.0)


def _label_keys(labels: list[str], aliases: dict[str, str] | None) -> dict[str, str]:
    keys = {_label_key(label): label for label in labels}
    for alias, label in (aliases or {}).items():
        keys.setdefault(_label_key(alias), label)
    return keys


def _first_label_position(positions: list[TokenPosition]) -> int:
    start = 0
    while start < min(len(positions), _MAX_LEAD_TOKENS) and not _token_key(positions[start].token):
        start += 1  # skip a leading space, newline, quote or "**" the teacher emitted first
    return start


def label_mass_left_out(
    positions: list[TokenPosition] | None, labels: list[str], aliases: dict[str, str] | None = None
) -> tuple[float, float]:
    """What a soft label could not see, as probability at the answer's first token:
    (the mass of top-k tokens that start a label yet went to none: a runner-up shared by several
    labels, "Search" for SearchCreativeWork and SearchScreeningEvent, whose next token the teacher
    never wrote; the mass outside the top-k, when some label got nothing and may be hiding there)."""
    soft = soft_label_from_logprobs(positions, labels, aliases)
    if soft is None:
        return 0.0, 0.0
    keys = _label_keys(labels, aliases)
    here = positions[_first_label_position(positions)]
    probs = [(_token_key(c.token), math.exp(c.logprob)) for c in (here.top or [here])]
    starts_a_label = sum(p for key, p in probs if key and any(k.startswith(key) for k in keys))
    outside_top_k = max(1.0 - sum(p for _, p in probs), 0.0)
    return max(starts_a_label - soft[1], 0.0), (outside_top_k if min(soft[0].values()) == 0 else 0.0)


def one_hot(label: str, labels: list[str]) -> dict[str, float]:
    return {lab: 1.0 if lab == label else 0.0 for lab in labels}


def _strip_wrapping(text: str) -> tuple[str, int, str | None]:
    """The JSON-looking part of an answer, its offset in the answer, and which wrapping was removed."""
    fence = _FENCE.search(text)
    if fence:
        return fence.group(1), fence.start(1), "code_fence"
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return text, 0, None
    start = min(starts)
    return text[start:], start, ("surrounding_prose" if text[:start].strip() else None)


def parse_json(text: str, validator) -> Parsed:
    """Parse a JSON answer and validate it (``validator``: a jsonschema validator instance).
    Repairs only trivial wrapping: a code fence, or prose before or after the JSON value."""
    body, offset, repair = _strip_wrapping(text)
    stripped = body.lstrip()
    offset += len(body) - len(stripped)
    try:
        value, end = json.JSONDecoder().raw_decode(stripped)
    except json.JSONDecodeError as exc:
        return Parsed(reason="json_invalid", detail=f"not JSON: {exc.msg} at character {offset + exc.pos}")
    if stripped[end:].strip():
        repair = repair or "surrounding_prose"
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(root)"
        return Parsed(reason="json_schema", detail=f"schema violation at {where}: {first.message[:200]}")
    return Parsed(value, repair=repair, span=(offset, offset + end))


def parse_text(text: str, min_chars: int, max_chars: int | None) -> Parsed:
    body = text.strip()
    if len(body) < min_chars:
        return Parsed(reason="text_too_short", detail=f"{len(body)} characters < output.min_chars {min_chars}")
    if max_chars is not None and len(body) > max_chars:
        return Parsed(reason="text_too_long", detail=f"{len(body)} characters > output.max_chars {max_chars}")
    start = text.find(body)
    return Parsed(body, span=(start, start + len(body)))
