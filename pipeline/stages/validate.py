"""``distill validate <task>``: check a task folder completely before any request is paid for.

Reads:  prompts/<task>/ (task.yaml, templates, examples.yaml, schema), the input source, the
        eval source and decontamination files it names.
Writes: nothing. Prints one line per problem (file, field or line, and the fix); exit 0 when valid.

Besides each file on its own, it checks what the later stages will need of each other
(pipeline/stages/cross_checks.py): a training method the teacher's answers can feed, a student on
disk, a max_length the prompts fit, an eval source evaluate can read.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from pipeline.config.task import TaskConfigError, TaskFolder, load_task
from pipeline.errors import DistillError
from pipeline.inputs import input_writing_variables, read_inputs, written_stand_in
from pipeline.prompts import PromptRenderer
from pipeline.stages import cross_checks
from pipeline.stages.preview import max_completion_tokens

HELP = "Check a task folder: config, templates, inputs; one line per problem."

_DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


@dataclass
class ValidationReport:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check(report: ValidationReport, fn, *args):
    """Run one check; a DistillError becomes a problem line and the other checks still run."""
    try:
        return fn(*args)
    except DistillError as err:
        report.problems.append(str(err))
        return None


def _check_json_schema(task: TaskFolder) -> None:
    import jsonschema

    out = task.config.output
    if out.kind != "json":
        return
    schema = out.json_schema
    where = "task.yaml: output.json_schema"
    if out.json_schema_file:
        path = task.file(out.json_schema_file)
        where = str(path)
        try:
            schema = json.loads(path.read_text(encoding="utf-8-sig"))
        except OSError:
            raise DistillError(f"{path}: JSON Schema file not found; fix output.json_schema_file") from None
        except json.JSONDecodeError as exc:
            raise DistillError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise DistillError(f"{where}: not a valid JSON Schema ({exc.message})") from None


def _check_eval_source(task: TaskFolder, report: ValidationReport, renderer) -> list[dict] | None:
    """The eval rows (None when there are none to read), each problem of them added to the report."""
    ev = task.config.eval
    if ev.source is None:
        return None
    rows = _check(report, _read_inputs, ev.source, task, renderer, report, "eval.source")
    if rows is None:
        return None
    if not rows:
        report.problems.append(f"{task.path / 'task.yaml'}: eval.source: no rows (check eval.source.where)")
        return None
    if ev.gold_field and ev.gold_field not in rows[0]:
        report.problems.append(
            f"{task.path / 'task.yaml'}: eval.gold_field: '{ev.gold_field}' is not an eval input field "
            f"(fields: {', '.join(rows[0])}); map it in eval.source.fields"
        )
    cross_checks.check_eval_rows(task, report, rows, renderer)
    cross_checks.check_eval_size(task, report, len(rows))
    report.notes.append(f"eval inputs: {len(rows)}")
    return rows


def _read_inputs(source, task: TaskFolder, renderer, report: ValidationReport, section: str) -> list[dict]:
    """A source's rows less its blank inputs, which are named as a warning (generate skips them)."""
    variables = renderer.input_variables() if renderer is not None else set()
    rows, blank = read_inputs(source, task.path, variables, section)
    if blank:
        report.warnings.append(blank)
    return rows


def _render_all(renderer, inputs: list[dict]) -> list:
    """Every input's prompt; the first that fails is the problem reported (the rest likely share it)."""
    return [renderer.render(x) for x in inputs]


def validate_task(task_arg) -> ValidationReport:
    """Every problem of a task folder, as one-line messages; nothing is sent anywhere."""
    report = ValidationReport()
    try:
        task = load_task(task_arg)
    except TaskConfigError as err:
        report.problems.extend(err.problems)
        return report
    except DistillError as err:
        report.problems.append(str(err))
        return report
    cfg = task.config
    renderer = _check(report, PromptRenderer.for_task, task)
    _check(report, _check_json_schema, task)

    inputs: list[dict] = []  # the real inputs, then one stand-in for the teacher-written ones
    n_inputs = 0  # how many the run answers
    if cfg.inputs.source is not None:
        rows = _check(report, _read_inputs, cfg.inputs.source, task, renderer, report, "inputs.source")
        if rows is not None:
            if not rows:
                report.problems.append(f"{task.path / 'task.yaml'}: inputs.source: the source has no rows")
            else:
                inputs, n_inputs = rows, len(rows)
                report.notes.append(f"inputs: {len(rows)}")
    if cfg.inputs.generate is not None:
        gen = cfg.inputs.generate
        variables = input_writing_variables(gen)
        report.notes.append(f"teacher-written inputs: {len(variables)}")
        if renderer is not None:
            tpl = _check(report, renderer.template, gen.template)
            if tpl is not None:
                _check(report, renderer.render_template, tpl, variables[0])
        # as long as the teacher may write it, in words of about one token each
        written, _ = max_completion_tokens(gen.params or cfg.teacher.params)
        inputs = inputs + [written_stand_in(gen, inputs, " ".join(["word"] * written))]
        n_inputs += gen.count
    rendered = _check(report, _render_all, renderer, inputs) if renderer is not None else None

    eval_rows = _check_eval_source(task, report, renderer)
    if eval_rows and inputs:
        cross_checks.check_eval_overlap(task, report, inputs, eval_rows)
    for check in (cross_checks.unnamed_labels_warning, cross_checks.labels_after_input_warning):
        warning = check(task, renderer) if rendered else None
        if warning:
            report.warnings.append(warning)
    for check, args in ((cross_checks.check_train_plan, ()), (cross_checks.check_student, ()),
                        (cross_checks.check_train_settings, ()), (cross_checks.check_logprob_settings, ()),
                        (cross_checks.check_curate_settings, (inputs,)), (cross_checks.check_eval_pricing, ()),
                        (cross_checks.check_held_out_split, (n_inputs if inputs else None,)),
                        (cross_checks.check_rows_per_label, (n_inputs if inputs else None,)),
                        (cross_checks.check_max_length, (rendered or [],))):
        _check(report, check, task, report, *args)
    for extra in cfg.decontam.extra_files:
        if not task.file(extra).exists():
            report.problems.append(f"{task.path / 'task.yaml'}: decontam.extra_files: {task.file(extra)} not found")

    from pipeline.stages.generate import scoring_labels

    note = cfg.teacher.params_note() if scoring_labels(task) is None else None  # a scored label samples nothing
    if note is not None:
        report.warnings.append(f"{task.path / 'task.yaml'}: {note}")
    if cfg.teacher.backend in _DEFAULT_KEY_ENV:
        env = cfg.teacher.api_key_env or _DEFAULT_KEY_ENV[cfg.teacher.backend]
        if not os.environ.get(env) and not cfg.teacher.base_url:
            report.warnings.append(f"{env} is not set; `distill generate` will need it (environment or .env)")
    return report


def add_arguments(parser) -> None:
    parser.add_argument("task", help="Task folder (prompts/<task>) or task name.")


def main(args) -> int:
    report = validate_task(args.task)
    for line in report.problems:
        print(f"error: {line}")
    for line in report.warnings:
        print(f"warning: {line}")
    if report.ok:
        extra = f" ({'; '.join(report.notes)})" if report.notes else ""
        print(f"ok: {args.task} is valid{extra}")
        return 0
    print(f"{len(report.problems)} problem(s) in {args.task}")
    return 1
