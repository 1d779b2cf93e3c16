"""The checks of ``distill validate`` that span stages: what generate hands to curate, curate to
train and train to evaluate, checked on the config and the inputs before any request is paid for.

A task can be valid section by section and still fail at train after the teacher has been paid:
``train.method: kd`` on free text needs the teacher's token ids in the student's vocabulary, which
an API teacher never gives. Each check here adds one line per problem (``task.yaml: field: what is
wrong; the fix``) or warning to the report. Nothing is sent and no model is loaded; tokenizers are
read only when they are already on disk.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.config.base import as_text
from pipeline.config.task import TaskFolder
from pipeline.errors import DistillError
from pipeline.training.arguments import DEFAULT_MAX_LENGTH

# Backends whose logprobs carry token ids of the teacher's own vocabulary.
TOKEN_ID_BACKENDS = ("hf", "vllm")
# More than this share of rows longer than train.sft.max_length is an error, not a warning: the
# new user's few-shot task lost 188 of 403 rows to a max_length copied from the demo (issue 12).
MAX_LENGTH_DROP_SHARE = 0.02
CHARS_PER_TOKEN = 4  # the estimate when the student's tokenizer is not on disk yet (as preview's)
CHAT_TOKENS_PER_MESSAGE = 5  # "<|im_start|>role\n ... <|im_end|>\n" in ChatML-style templates


def teacher_has_logprobs(task: TaskFolder) -> bool:
    """The teacher's answers carry a distribution: top-k logprobs, or every label scored."""
    from pipeline.stages.generate import scoring_labels

    t = task.config.teacher
    return (t.backend != "anthropic" and bool(t.top_logprobs)) or scoring_labels(task) is not None


def teacher_has_token_ids(task: TaskFolder) -> bool:
    """An OpenAI-compatible server gives ids only as vLLM's ``return_tokens_as_token_ids``."""
    t = task.config.teacher
    if t.backend in TOKEN_ID_BACKENDS:
        return True
    return t.backend == "openai" and bool(t.base_url) and bool(t.params.get("return_tokens_as_token_ids"))


def student_tokenizer_source(task: TaskFolder) -> str | None:
    s = task.config.student
    return s.teacher_model if s.init == "from_teacher_layers" else s.model


def local_model_folder(name_or_path: str) -> Path | None:
    """The folder a model name resolves to, without converting or downloading anything (None when
    it is not on disk yet: the embedded model before its first use, or a hosted model name)."""
    from pipeline.local_models import SMOLLM2_NAME, _is_complete, cache_root, is_embedded_name

    if is_embedded_name(name_or_path):
        folder = cache_root() / SMOLLM2_NAME
        return folder if _is_complete(folder) else None
    path = Path(str(name_or_path)).expanduser()
    return path if (path / "config.json").is_file() or (path / "tokenizer.json").is_file() else None


def _same_model(a: str, b: str) -> bool:
    from pipeline.local_models import is_embedded_name

    if is_embedded_name(a) and is_embedded_name(b):
        return True
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def tokenizer_mismatch(task: TaskFolder) -> str | None:
    """Why the student's tokenizer is not the teacher's, or None (same, or not checkable offline)."""
    student, teacher = student_tokenizer_source(task), task.config.teacher.model
    if not student or _same_model(student, teacher):
        return None
    a, b = local_model_folder(student), local_model_folder(teacher)
    if a is None or b is None:
        return None  # train compares the stored token ids with the student's vocabulary
    from transformers import AutoTokenizer

    if AutoTokenizer.from_pretrained(a).get_vocab() == AutoTokenizer.from_pretrained(b).get_vocab():
        return None
    return f"the student's tokenizer ({student}) is not the teacher's ({teacher})"


def why_no_token_kd(task: TaskFolder) -> str | None:
    """Why token-level KD cannot work for this task, or None when it can."""
    t = task.config.teacher
    if t.backend == "anthropic":
        return "the anthropic teacher returns no logprobs"
    if not t.top_logprobs:
        return "teacher.top_logprobs is unset, so no teacher logprobs are kept"
    if not teacher_has_token_ids(task):
        if t.backend == "openai" and t.base_url:
            return ("the server's logprobs carry no token ids (a vLLM server gives them with "
                    "teacher.params.return_tokens_as_token_ids: true)")
        return f"the {t.backend} teacher ({t.model}) returns tokens of its own tokenizer, not the student's"
    return tokenizer_mismatch(task)


def check_train_plan(task: TaskFolder, report) -> None:
    """train.method x kd_level x output.kind x teacher backend x logprobs x student tokenizer."""
    cfg, where = task.config, task.path / "task.yaml"
    tr, kind = cfg.train, cfg.output.kind
    if tr.method == "sft":
        return
    if tr.kd_level == "label" and kind != "label":
        report.problems.append(
            f"{where}: train.kd_level: 'label' needs output.kind: label (this task answers {kind}); "
            "set train.method: sft"
        )
        return
    problem = why_no_token_kd(task)
    if kind != "label":
        if problem:
            report.problems.append(
                f"{where}: train.method: kd on {kind} answers is token-level and {problem}; set train.method: sft "
                "(or use a teacher that shares the student's tokenizer, with teacher.top_logprobs)"
            )
        return
    if tr.kd_level == "token" and problem:
        report.problems.append(f"{where}: train.kd_level: token: {problem}; set train.kd_level: label (or auto)")
        return
    if (tr.kd_level == "label" or problem) and not teacher_has_logprobs(task):
        report.warnings.append(
            f"{where}: train.method: kd without teacher logprobs trains on one-hot labels, which is plain "
            "cross-entropy (SFT); set teacher.top_logprobs (e.g. 5) for soft labels, or train.method: sft"
        )


def check_student(task: TaskFolder, report) -> None:
    """The student's weights must exist locally: nothing is downloaded at train time."""
    from pipeline.local_models import is_embedded_name

    s, where = task.config.student, task.path / "task.yaml"
    key = "student.teacher_model" if s.init == "from_teacher_layers" else "student.model"
    name = student_tokenizer_source(task)
    if not name:  # a task may stop at curate: only train needs it
        report.warnings.append(f"{where}: {key} is unset; `distill train` will need it (a local model folder "
                               "or smollm2-135m-instruct)")
    elif not is_embedded_name(name) and not Path(name).expanduser().is_dir():
        report.problems.append(f"{where}: {key}: '{name}' is not a local model folder nor an embedded model; "
                               "give the path of a folder saved with save_pretrained")


def check_train_settings(task: TaskFolder, report) -> None:
    """train.sft keys (TRL's SFTConfig fields) and the settings KD cannot use."""
    from pipeline.training.arguments import check_sft_keys, check_sft_scalars

    where = task.path / "task.yaml"
    sft = task.config.train.sft
    if sft:
        fields = sft_fields()
        try:
            check_sft_keys(sft, f"{where}: train.sft", set(fields["names"]))
            sft = check_sft_scalars(sft, f"{where}: train.sft", fields["scalars"])
        except DistillError as err:
            report.problems.append(str(err))
    if task.config.train.method == "kd" and (sft.get("packing") or sft.get("padding_free")):
        report.problems.append(f"{where}: train.sft: packing / padding_free mix rows, so the teacher's per-row "
                               "logprobs cannot follow them; turn them off or set train.method: sft")


def sft_fields() -> dict[str, Any]:
    """SFTConfig's field names and its number and boolean fields (``arguments.sft_scalar_fields``), kept per
    TRL + transformers version in the model cache: importing TRL takes 5-25 s on a small machine, more
    than all of validate's other checks together."""
    import json
    from importlib.metadata import version

    from pipeline.local_models import cache_root
    from pipeline.training import arguments

    path = cache_root() / f"sft_fields4-trl{version('trl')}-transformers{version('transformers')}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        fields = {"names": sorted(arguments.sft_field_names()), "scalars": arguments.sft_scalar_fields()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(fields), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache only costs the next validate its import time
    return fields


def check_logprob_settings(task: TaskFolder, report) -> None:
    """Settings that read the teacher's logprobs do nothing without them."""
    cfg, where = task.config, task.path / "task.yaml"
    if teacher_has_logprobs(task):
        return
    used = [name for name, on in (("filters.min_mean_logprob", cfg.filters.min_mean_logprob is not None),
                                  ("filters.min_label_prob", cfg.filters.min_label_prob is not None),
                                  ("output.calibrate: prior", cfg.output.calibrate == "prior")) if on]
    for name in used:
        report.warnings.append(f"{where}: {name} reads the teacher's logprobs, which this teacher does not keep; "
                               "set teacher.top_logprobs or remove it")


def check_curate_settings(task: TaskFolder, report, inputs: list[dict[str, Any]]) -> None:
    """What curate would otherwise find only after the teacher is paid: a bad filter regex, dedupe
    fields the inputs do not have."""
    from pipeline.curation.filters import check_patterns

    cfg, where = task.config, task.path / "task.yaml"
    try:
        check_patterns(cfg.filters)
    except DistillError as err:
        report.problems.append(str(err).replace("task.yaml", str(where), 1))
    fields = cfg.dedupe.fields
    if cfg.dedupe.enabled and fields and cfg.dedupe.compare != "output" and inputs:
        have = set(inputs[0]) if cfg.inputs.source is not None else {cfg.inputs.generate.field}
        missing = [f for f in fields if f not in have]
        if missing:
            report.problems.append(f"{where}: dedupe.fields: {missing} are not input fields ({sorted(have)}); "
                                   "fix dedupe.fields")


def unnamed_labels_warning(task: TaskFolder, renderer) -> str | None:
    """One line when a label task's prompt, its input fields masked, never names some of its labels."""
    from pipeline.prompts import unnamed_labels

    cfg = task.config
    if cfg.output.kind != "label" or not cfg.output.labels or renderer is None:
        return None
    try:
        messages = renderer.render_without_inputs()
    except DistillError:  # a template that needs real values (arithmetic on a field): nothing to say here
        return None
    missing = unnamed_labels(messages, cfg.output.labels)
    if not missing:
        return None
    named = ", ".join(repr(m) for m in missing)
    return (f"{task.path / 'user.j2'}: the prompt never names label(s) {named} of output.labels; a teacher "
            "rarely answers a label it was not offered: list them in the question, e.g. "
            "{{ labels | join(', ') }}")


MANY_LABELS = 20  # from here on, where the prompt lists the labels decides what a prompt costs


def labels_after_input_warning(task: TaskFolder, renderer) -> str | None:
    """One line when a prompt lists many labels after the input: every prompt then pays for the list
    anew, where listed before the input (system.j2) a batch shares it as one prefix (the hf teacher's
    scoring and the student's evaluation run a batch's common prefix once). Measured on 77
    banking-style intents with the embedded teacher (2026-12-07, 128 messages each): 2.2 s a prompt
    with the list after the message, 1.2 s before it, and the calibrated teacher right on 56% against
    66%. On seven intents it was no better (43.6% against 38.6% of 140), so only many labels warn."""
    from pipeline.prompts import INPUT_MARK, unnamed_labels
    from pipeline.records import Message

    cfg = task.config
    labels = cfg.output.labels or []
    if cfg.output.kind != "label" or len(labels) < MANY_LABELS or renderer is None:
        return None
    try:
        messages = renderer.render_without_inputs()
    except DistillError:
        return None
    text = "\n".join(m.content for m in messages)
    if INPUT_MARK not in text:
        return None
    before = text[: text.index(INPUT_MARK)]
    after_only = set(unnamed_labels([Message(role="user", content=before)], labels)) - set(unnamed_labels(messages, labels))
    if len(after_only) <= len(labels) // 2:
        return None
    return (f"{task.path / 'user.j2'}: the prompt lists {len(after_only)} labels after the input, so each prompt pays "
            "for the list again; list them before it, in system.j2 (`The intents: {{ labels | join(', ') }}.`), "
            "and a batch shares them (77 intents: 1.2 s a prompt instead of 2.2, docs/label-distillation.md §1)")


def eval_overlap(task: TaskFolder, inputs: list[dict[str, Any]], eval_rows: list[dict[str, Any]]) -> int:
    """How many inputs are also eval inputs: the same text in every template field, compared as
    decontamination compares (case-folded words). A lower bound on what curate's 13-gram check drops."""
    from pipeline.curation.decontam import words

    if not inputs or not eval_rows:
        return 0
    fields = sorted(inputs[0])

    def key(row: dict[str, Any]) -> tuple[str, ...]:
        return tuple(" ".join(words(str(row.get(f, "")))) for f in fields)

    held = {key(r) for r in eval_rows}
    return sum(key(x) in held for x in inputs)


def overlap_matters(task: TaskFolder) -> bool:
    """Real inputs, an eval source, and curate decontaminating the one against the other."""
    cfg = task.config
    return cfg.inputs.source is not None and cfg.eval.source is not None and cfg.decontam.enabled


def eval_overlap_line(task: TaskFolder, inputs: list[dict[str, Any]],
                      eval_rows: list[dict[str, Any]]) -> tuple[str, bool] | None:
    """(the line, whether every input is an eval input, so that nothing would be left to train on) when
    some inputs are eval inputs and curate would decontaminate them away; None otherwise."""
    if not overlap_matters(task):
        return None
    shared = eval_overlap(task, inputs, eval_rows)
    if not shared:
        return None
    return (f"{task.path / 'task.yaml'}: inputs.source: {shared} of {len(inputs)} inputs are also eval inputs "
            "(eval.source); curate's decontamination drops their answers after the teacher is paid, and the "
            "evaluation is not on unseen inputs: split the file with group_split on both sources "
            "(keep: rest / keep: holdout; field: a group column such as the user or product, or the text "
            "column itself for a split by row)"), shared == len(inputs)


def check_eval_overlap(task: TaskFolder, report, inputs: list[dict[str, Any]], eval_rows: list[dict[str, Any]]) -> None:
    """Inputs that are eval inputs: a warning, or a problem when every input is one."""
    found = eval_overlap_line(task, inputs, eval_rows)
    if found:
        line, every = found
        (report.problems if every else report.warnings).append(line)


def check_eval_pricing(task: TaskFolder, report) -> None:
    cfg = task.config
    if cfg.eval.teacher_price_per_hour is not None and cfg.teacher.backend not in TOKEN_ID_BACKENDS:
        report.warnings.append(
            f"{task.path / 'task.yaml'}: eval.teacher_price_per_hour prices local teachers (hf, vllm) only; the "
            f"{cfg.teacher.backend} teacher is priced per token from the price table: remove it"
        )


def check_held_out_split(task: TaskFolder, report, n_inputs: int | None) -> None:
    """Without eval.source, evaluate scores the held-out split: it must not be empty."""
    cfg, where = task.config, task.path / "task.yaml"
    if cfg.eval.source is not None or n_inputs is None:
        return
    # curate rounds eval_fraction x n per label: with few inputs a split may hold out none
    held_out = int(cfg.split.eval_fraction * n_inputs + 0.5)
    if held_out < 1:
        line = (f"{where}: split.eval_fraction: {cfg.split.eval_fraction} of {n_inputs} inputs holds out "
                f"{'none' if cfg.split.eval_fraction == 0 else 'likely none'}, and eval.source is unset, so "
                "evaluate would have nothing to score; raise split.eval_fraction or set eval.source")
        (report.problems if cfg.split.eval_fraction == 0 else report.warnings).append(line)


# Below this many training rows a label, on average, a student learns little of the labels (docs/
# label-distillation.md: 7 intents from 14 rows a label, 87.4% agreement with a strong teacher and
# 98.3% from 60; 77 intents from 4.7 a label, 22.5% with the demo's teacher).
MIN_ROWS_PER_LABEL = 10


def check_rows_per_label(task: TaskFolder, report, n_inputs: int | None) -> None:
    """Label tasks: a warning when the inputs give a student too few training rows a label to learn from."""
    cfg, where = task.config, task.path / "task.yaml"
    if cfg.output.kind != "label" or not n_inputs or not cfg.output.labels or cfg.split.eval_fraction >= 1:
        return
    labels = len(cfg.output.labels)
    per_label = n_inputs * (1 - cfg.split.eval_fraction) / labels
    if per_label < MIN_ROWS_PER_LABEL:
        need = math.ceil(MIN_ROWS_PER_LABEL * labels / (1 - cfg.split.eval_fraction))
        report.warnings.append(
            f"{where}: inputs: about {per_label:.1f} training rows a label ({n_inputs} inputs, {labels} labels, "
            f"split.eval_fraction {cfg.split.eval_fraction}; fewer after dedupe), too few for a student to learn "
            f"the labels from (77 intents from 4.7 a label: 22.5% agreement with the teacher); give it at least "
            f"{need} inputs (inputs.sample, more rows in inputs.source, or inputs.generate.count)"
        )


MIN_EVAL_INPUTS = 200  # below this an agreement or accuracy is known to worse than about +-7 points


def check_eval_size(task: TaskFolder, report, n_rows: int) -> None:
    """A warning when the real eval inputs (after eval.limit) are too few for the report's figures to
    mean much: the 95% margin of a share near one half is 1.96 * sqrt(0.25 / n)."""
    n = min(n_rows, task.config.eval.limit or n_rows)
    if 0 < n < MIN_EVAL_INPUTS:
        margin = 100 * 1.96 * math.sqrt(0.25 / n)
        report.warnings.append(
            f"{task.path / 'task.yaml'}: eval.source: {n} inputs to evaluate on; an agreement or accuracy from "
            f"them is known to about +-{margin:.0f} points (95%), and a teacher's margin over the majority answer "
            f"smaller than that reads as chance: give eval.source at least {MIN_EVAL_INPUTS} inputs (500: +-4 points)")


def check_eval_rows(task: TaskFolder, report, rows: list[dict[str, Any]], renderer) -> None:
    """Eval inputs carry what evaluate reads: the template's variables and gold answers it can parse."""
    from pipeline.evaluation.eval_inputs import (
        gold_class_names,
        gold_name,
        parse_gold,
        suggested_gold_map,
        unlabelled_class_id,
        unlabelled_split_fix,
    )

    ev, where = task.config.eval, task.path / "task.yaml"
    bad: list[tuple[int, Any]] = []
    names = gold_class_names(task) if ev.gold_field else None
    for i, row in enumerate(rows, start=1):
        if ev.gold_field and ev.gold_field in row:
            try:
                parse_gold(row[ev.gold_field], task, "", names)
            except DistillError:
                bad.append((i, row[ev.gold_field]))
    unlabelled = [i for i, v in bad if unlabelled_class_id(v, names)]
    if unlabelled:
        report.problems.append(
            f"{where}: eval.gold_field: {len(unlabelled)} of {len(rows)} gold values are -1, a ClassLabel's "
            f"'no label' (an unlabelled split; e.g. row {unlabelled[0]}); {unlabelled_split_fix(names or [], ev.gold_field)}")
        bad = [(i, v) for i, v in bad if not unlabelled_class_id(v, names)]
    if bad:
        labels = task.config.output.labels or []
        first, name = bad[0][1], gold_name(bad[0][1], names)
        shown = f"{first!r}" if name == as_text(first) else f"{first!r}, the class {name!r}"
        named = sorted({gold_name(v, names) for _, v in bad})
        suggestion = suggested_gold_map(named, labels)
        fix = ("eval.gold_map: {" + ", ".join(f"{k}: {v}" for k, v in suggestion.items()) + "}"
               if suggestion else "eval.gold_map")
        # a ClassLabel none of whose names is a label: the task still has another task's labels
        add = (f"list the ClassLabel's names as output.labels: [{', '.join(names)}]"
               if names and not suggestion and not any(n in labels for n in names) else "add them to output.labels")
        report.problems.append(
            f"{where}: eval.gold_field: {len(bad)} of {len(rows)} gold values are not in output.labels {labels} "
            f"after eval.gold_map (e.g. {shown}, in row {bad[0][0]}); map them with {fix}, {add}, "
            "or drop them with eval.source.where"
        )
    if renderer is not None and rows:
        prompt_input = {k: v for k, v in rows[0].items() if k != ev.gold_field}
        try:
            renderer.render(prompt_input)
        except DistillError as err:
            report.problems.append(f"{where}: eval.source: its first row does not render: {err}; map the "
                                   "template's variables in eval.source.fields")


def estimate_tokens(task: TaskFolder, messages_list: list, answer: int | Sequence[str]) -> tuple[list[int], str, int]:
    """Each prompt's length in tokens plus the answer's, how it was counted, and the answer's tokens:
    ``answer`` is a token count, or the texts an answer can be (a label task's labels: the longest one,
    as an assistant message). Counted with the student's tokenizer.json when it is on disk (read with
    ``tokenizers``: transformers would add seconds to every validate), else ~4 characters a token;
    plus a few tokens a message for the chat template."""
    folder = local_model_folder(student_tokenizer_source(task) or "")
    count, how = (lambda text: math.ceil(len(text) / CHARS_PER_TOKEN)), f"~{CHARS_PER_TOKEN} characters a token"
    if folder is not None and (folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        count, how = (lambda text: len(tok.encode(text, add_special_tokens=False).ids)), "the student's tokenizer"
    answer_tokens = answer if isinstance(answer, int) else max(count(t) for t in answer) + CHAT_TOKENS_PER_MESSAGE
    lengths = [sum(count(m.content) + CHAT_TOKENS_PER_MESSAGE for m in msgs) + answer_tokens for msgs in messages_list]
    return lengths, how, answer_tokens


def check_max_length(task: TaskFolder, report, messages_list: list) -> None:
    """Rows longer than train.sft.max_length lose their answer and are dropped at train: estimate
    how many from the rendered prompts plus the longest answer (a label task's longest label, else
    the teacher's max_tokens)."""
    from pipeline.stages.preview import max_completion_tokens

    if not messages_list:
        return
    max_length = task.config.train.sft.get("max_length", DEFAULT_MAX_LENGTH)
    if not isinstance(max_length, int):
        return
    out = task.config.output
    # a label task trains on the label itself, whatever the teacher wrote around it
    answer = out.labels if out.kind == "label" and out.labels else max_completion_tokens(task.config.teacher.params)[0]
    lengths, how, answer_tokens = estimate_tokens(task, messages_list, answer)
    over = sum(n > max_length for n in lengths)
    if not over:
        return
    fits = 64 * math.ceil(max(lengths) / 64)
    line = (f"{task.path / 'task.yaml'}: train.sft.max_length: {max_length} tokens is shorter than {over} of "
            f"{len(lengths)} prompts plus their answers (estimated with {how}; answers up to "
            f"{answer_tokens} tokens): train drops or cuts those rows; set train.sft.max_length: {fits}")
    (report.problems if over / len(lengths) > MAX_LENGTH_DROP_SHARE else report.warnings).append(line)
