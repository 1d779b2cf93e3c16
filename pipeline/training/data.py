"""Load a built dataset version and turn its TrainRows into the tensors the trainers read.

Reads:  data/<task>/versions/<v>/train.jsonl, eval.jsonl (TrainRow per line, written by curate).
Writes: nothing; returns ``datasets.Dataset``s with columns
    input_ids, labels                      every method (prompt tokens masked with -100)
    kd_pos, kd_ids, kd_logprobs            token-level KD: per aligned completion token, its position
                                           and the teacher's top-k ids / T=1 logprobs
    answer_start, label_probs,             label-level KD: where the answer starts, the teacher's
    label_index                            distribution over the label set, and its label's index

Tokenisation follows TRL's conversational prompt-completion rule (prompt with the generation
prompt, then prompt+completion; the completion starts where the two diverge), so SFT here trains
on exactly the tokens SFTTrainer would. We tokenise once ourselves so that the teacher's token
positions can be laid on the same ids.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.errors import ConfigError, InputDataError
from pipeline.records import Message, TokenPosition, TrainRow, iter_jsonl_with_errors
from pipeline.training.label_kd import teacher_label_probs

KDLevel = Literal["none", "token", "label"]


@dataclass
class EncodedSplit:
    rows: list[dict[str, Any]]
    counts: dict[str, int] = field(default_factory=dict)


def read_train_rows(path: Path) -> list[tuple[int, TrainRow]]:
    """(line number, row) for every row; a bad line is an InputDataError naming file and line."""
    out = []
    for lineno, row, err in iter_jsonl_with_errors(path, TrainRow):
        if err is not None:
            raise InputDataError(f"{path}:{lineno}: {err}; re-run `distill curate` or fix the line")
        out.append((lineno, row))
    return out


def chat_ids(tokenizer, messages: list[Message], *, add_generation_prompt: bool = False) -> list[int]:
    """Token ids of messages rendered with the tokenizer's chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"student tokenizer ({tokenizer.name_or_path}) has no chat template; the dataset is conversational: "
            "use an instruct student or set tokenizer.chat_template"
        )
    out = tokenizer.apply_chat_template(
        [m.model_dump() for m in messages], add_generation_prompt=add_generation_prompt, tokenize=True
    )
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def encode_prompt_completion(tokenizer, prompt: list[Message], completion: list[Message]) -> tuple[list[int], int]:
    """(ids of prompt+completion, index where the completion starts), as TRL computes it."""
    prompt_ids = chat_ids(tokenizer, prompt, add_generation_prompt=True)
    full = chat_ids(tokenizer, prompt + completion)
    start = 0
    for a, b in zip(prompt_ids, full):
        if a != b:
            break
        start += 1
    return full, start


def truncate(ids: list[int], start: int, max_length: int | None, mode: str) -> tuple[list[int], int, int]:
    """Apply SFTConfig's max_length / truncation_mode. Returns (ids, new completion start, offset)
    where offset is how many tokens were cut from the front (keep_end)."""
    if max_length is None or len(ids) <= max_length:
        return ids, start, 0
    if mode == "keep_end":
        cut = len(ids) - max_length
        return ids[cut:], max(start - cut, 0), cut
    return ids[:max_length], min(start, max_length), 0


def _position_candidates(pos: TokenPosition) -> tuple[list[int], list[float]]:
    """The teacher's top-k at one position plus the sampled token, deduplicated by id."""
    seen: dict[int, float] = {}
    for cand in [*pos.top, pos]:
        if cand.id is not None and cand.id not in seen:
            seen[cand.id] = cand.logprob
    return list(seen), list(seen.values())


def vocabulary_mismatch(rows: list[tuple[int, TrainRow]], tokenizer, source: Path) -> str | None:
    """None when every stored teacher token id means the same string in the student's vocabulary;
    otherwise a description of the first id that does not (or of missing ids)."""
    cache: dict[int, tuple[str, str]] = {}
    n_vocab = len(tokenizer)
    any_ids = False
    for lineno, row in rows:
        for pos in row.token_logprobs or []:
            for cand in [pos, *pos.top]:
                if cand.id is None:
                    return f"{source}:{lineno}: the teacher's logprobs carry no token ids (an API teacher)"
                any_ids = True
                if cand.id >= n_vocab or cand.id < 0:
                    return f"{source}:{lineno}: teacher token id {cand.id} is outside the student's vocabulary ({n_vocab})"
                if cand.id not in cache:
                    cache[cand.id] = (tokenizer.decode([cand.id]), tokenizer.convert_ids_to_tokens(cand.id))
                decoded, raw = cache[cand.id]
                if cand.token in (decoded, raw) or "\ufffd" in decoded:  # partial UTF-8 bytes decode lossy
                    continue
                return (
                    f"{source}:{lineno}: teacher token id {cand.id} is {cand.token!r} for the teacher "
                    f"({row.teacher_model}) but {decoded!r} for the student"
                )
    if not any_ids:
        return f"{source}: no row has token logprobs"
    return None


def align_teacher_tokens(ids: list[int], start: int, positions: list[TokenPosition], special: set[int]) -> int | None:
    """How many of the teacher's sampled tokens sit at ids[start:] (the completion re-tokenised).
    A trailing run of special tokens (the end-of-turn the teacher emitted) may differ; any other
    mismatch returns None: that row's stored ids do not re-tokenize to its completion."""
    n = 0
    for pos in positions:
        if start + n < len(ids) and pos.id == ids[start + n]:
            n += 1
            continue
        break
    rest = positions[n:]
    if rest and not all(p.id in special for p in rest):
        return None
    return n


def encode_rows(
    rows: list[tuple[int, TrainRow]],
    tokenizer,
    *,
    kd_level: KDLevel,
    labels: list[str] | None,
    max_length: int | None,
    truncation_mode: str = "keep_start",
    completion_only_loss: bool | None = True,
) -> EncodedSplit:
    """Tokenise rows for ``kd_level``; count what was aligned, truncated away, or left CE-only."""
    special = set(tokenizer.all_special_ids)
    counts = {"rows": 0, "dropped_truncated": 0, "kd_rows": 0, "kd_positions": 0, "kd_misaligned_rows": 0,
              "longest_tokens": 0}  # the max_length that would keep every row whole
    out = []
    for _, row in rows:
        full, start = encode_prompt_completion(tokenizer, row.prompt, row.completion)
        counts["longest_tokens"] = max(counts["longest_tokens"], len(full))
        ids, start_t, offset = truncate(full, start, max_length, truncation_mode)
        train_all = completion_only_loss is False
        lab = [t if (train_all or i >= start_t) else -100 for i, t in enumerate(ids)]
        if not any(x != -100 for x in lab[1:]):
            counts["dropped_truncated"] += 1
            continue
        item: dict[str, Any] = {"input_ids": ids, "labels": lab}
        if kd_level == "token":
            kd_pos, kd_ids, kd_lps = [], [], []
            n = align_teacher_tokens(full, start, row.token_logprobs or [], special) if row.token_logprobs else None
            if n is None:
                counts["kd_misaligned_rows"] += int(bool(row.token_logprobs))
            else:
                for j, pos in enumerate((row.token_logprobs or [])[:n]):
                    p = start + j - offset
                    if 0 < p < len(ids):  # position 0 is never predicted
                        cids, clps = _position_candidates(pos)
                        kd_pos.append(p)
                        kd_ids.append(cids)
                        kd_lps.append(clps)
            counts["kd_rows"] += int(bool(kd_pos))
            counts["kd_positions"] += len(kd_pos)
            item.update(kd_pos=kd_pos, kd_ids=kd_ids, kd_logprobs=kd_lps)
        elif kd_level == "label":
            probs = teacher_label_probs(row.soft_label, labels or [], row.label)
            counts["kd_rows"] += int(bool(probs))
            index = max(range(len(probs)), key=probs.__getitem__) if probs else (
                (labels or []).index(row.label) if row.label in (labels or []) else 0)
            # a row without any teacher label distribution trains on CE only: all-zero weights
            item.update(answer_start=start_t, label_probs=probs or [0.0] * len(labels or []), label_index=index)
        out.append(item)
        counts["rows"] += 1
    return EncodedSplit(out, counts)


def label_completions(tokenizer, rows: list[tuple[int, TrainRow]], labels: list[str]) -> list[list[int]]:
    """Each label's completion tokens (the label, then the end-of-turn token) after the first row's
    prompt, as training tokenises it. The assistant turn's opening does not depend on the prompt's
    content, so one row stands for all."""
    from pipeline.label_scoring import label_completion_ids

    prompt = [m.model_dump() for m in rows[0][1].prompt]
    return [label_completion_ids(tokenizer, prompt, label) for label in labels]


def choose_kd_level(
    method: str,
    requested: str,
    rows: list[tuple[int, TrainRow]],
    tokenizer,
    labels: list[str] | None,
    source: Path,
) -> tuple[KDLevel, str | None]:
    """Pick token- or label-level KD (or none for SFT). Returns (level, why token-level was not used)."""
    if method == "sft":
        return "none", None
    problem = vocabulary_mismatch(rows, tokenizer, source)
    if problem is None:
        aligned = sum(
            1
            for _, r in rows
            if r.token_logprobs
            and align_teacher_tokens(*encode_prompt_completion(tokenizer, r.prompt, r.completion), r.token_logprobs,
                                     set(tokenizer.all_special_ids)) is not None
        )
        with_lp = sum(1 for _, r in rows if r.token_logprobs)
        if with_lp and aligned * 2 < with_lp:
            problem = (
                f"{source}: the stored token ids re-tokenize to the completion in only {aligned} of {with_lp} rows "
                "(the teacher used another tokenizer or chat template)"
            )
    has_soft = labels is not None and any(r.soft_label or r.label for _, r in rows)
    if requested == "token" or (requested == "auto" and problem is None):
        if problem is not None:
            raise ConfigError(
                f"{problem}; token-level KD needs the student to share the teacher's vocabulary: use a student "
                "with the teacher's tokenizer, train.kd_level: label (label tasks), or train.method: sft"
            )
        return "token", None
    if requested == "label" or has_soft:
        if not labels:
            raise ConfigError(
                f"{source}: train.kd_level 'label' needs a label task (output.kind: label with output.labels)"
            )
        if not has_soft:
            raise ConfigError(f"{source}: no row has a soft_label or label; re-run `distill curate` on a label task")
        return "label", problem
    raise ConfigError(
        f"{problem}; for a teacher with another tokenizer KD works on label tasks only (answer-level soft "
        "targets): set train.method: sft for this task"
    )
