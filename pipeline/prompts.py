"""Render a task's Jinja2 templates into chat messages.

A task folder holds ``user.j2`` (required), ``system.j2`` (optional) and ``examples.yaml``
(optional few-shot turns: a list of ``{inputs: {...}, output: "..."}``). Rendering uses Jinja2's
SandboxedEnvironment with StrictUndefined: an undefined variable is an error naming the template,
the line and the variable. Input values are passed as data and are never themselves rendered, so
an input containing ``{{ ... }}`` stays literal text.
"""
from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import yaml
from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    meta,
)
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from pipeline import yaml_io
from pipeline.errors import TemplateError
from pipeline.records import Message

SYSTEM_TEMPLATE = "system.j2"
USER_TEMPLATE = "user.j2"
EXAMPLES_FILE = "examples.yaml"
INPUT_MARK = "\u2026"  # stands for an input's text where only the task's own wording matters


def _template_line(exc: BaseException, folder: Path) -> str:
    """Jinja2 rewrites tracebacks so template frames carry the template's file and line."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename and frame.filename.endswith(".j2"):
            return f"{frame.filename}:{frame.lineno}"
    return str(folder)


class PromptRenderer:
    """Renders one task's templates. Build it once per run; ``render`` is called per input."""

    @classmethod
    def for_task(cls, task) -> PromptRenderer:
        """The renderer of a loaded TaskFolder, with ``task``, ``description`` and ``labels`` in context."""
        cfg = task.config
        from pipeline.config.output import label_code_map

        labels = cfg.output.labels or []
        context = {"task": cfg.name, "description": cfg.description, "labels": labels}
        if cfg.output.label_codes:  # "A) positive\nB) negative": the teacher answers the letter
            context["label_options"] = "\n".join(f"{c}) {lab}" for c, lab in label_code_map(labels).items())
        return cls(task.path, context)

    def __init__(self, folder: Path, context: dict[str, Any] | None = None):
        self.folder = Path(folder)
        # Task-level variables every template sees (e.g. ``labels``); an input field of the same name wins.
        self.context = dict(context or {})
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(str(self.folder), encoding="utf-8-sig"),  # a BOM (Notepad) is not prompt text
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
        )
        self.user = self._load(USER_TEMPLATE, required=True)
        self.system = self._load(SYSTEM_TEMPLATE, required=False)
        self.examples = self._load_examples()

    def _load(self, name: str, *, required: bool):
        try:
            return self.env.get_template(name)
        except TemplateNotFound:
            if required:
                raise TemplateError(f"{self.folder / name}: template is missing; create it") from None
            return None
        except TemplateSyntaxError as exc:
            raise TemplateError(f"{self.folder / name}:{exc.lineno}: template syntax error: {exc.message}") from None

    def template(self, name: str):
        """Any other template of the folder (e.g. ``generate_input.j2``)."""
        return self._load(name, required=True)

    def _load_examples(self) -> list[dict[str, Any]]:
        path = self.folder / EXAMPLES_FILE
        if not path.exists():
            return []
        try:
            data = yaml_io.load(path.read_text(encoding="utf-8")) or []
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise TemplateError(f"{path}:{(mark.line + 1) if mark else ''}: invalid YAML") from None
        if not isinstance(data, list):
            raise TemplateError(f"{path}: expected a list of {{inputs: {{...}}, output: ...}} examples")
        for i, ex in enumerate(data):
            if not isinstance(ex, dict) or set(ex) != {"inputs", "output"} or not isinstance(ex["inputs"], dict):
                raise TemplateError(f"{path}: example {i + 1}: needs exactly the keys 'inputs' (a mapping) and 'output'")
        return data

    def render_template(self, template, variables: dict[str, Any]) -> str:
        try:
            return template.render(**{**self.context, **variables}).strip()
        except UndefinedError as exc:
            raise TemplateError(
                f"{_template_line(exc, self.folder)}: {exc.message}; add the field to the inputs' field mapping "
                "or fix the template"
            ) from None
        except SecurityError as exc:
            raise TemplateError(f"{_template_line(exc, self.folder)}: unsafe template operation: {exc}") from None
        except Exception as exc:  # noqa: BLE001 — a template bug (e.g. a filter on the wrong type): still one line
            raise TemplateError(f"{_template_line(exc, self.folder)}: {type(exc).__name__}: {exc}") from None

    def input_variables(self) -> set[str]:
        """The variables system.j2 and user.j2 read that the task does not set: the input's fields."""
        found: set[str] = set()
        for name in (SYSTEM_TEMPLATE, USER_TEMPLATE):
            if (self.folder / name).exists():
                source = self.env.loader.get_source(self.env, name)[0]
                found |= meta.find_undeclared_variables(self.env.parse(source))
        return found - set(self.context)

    def render_without_inputs(self) -> list[Message]:
        """The prompt with every input field replaced by a mark: what the task's own text says."""
        return self.render(dict.fromkeys(self.input_variables(), INPUT_MARK))

    def render(self, inputs: dict[str, Any]) -> list[Message]:
        """System message (if any), few-shot turns, then the user message for ``inputs``."""
        messages: list[Message] = []
        if self.system is not None:
            messages.append(Message(role="system", content=self.render_template(self.system, inputs)))
        for ex in self.examples:
            messages.append(Message(role="user", content=self.render_template(self.user, ex["inputs"])))
            messages.append(Message(role="assistant", content=str(ex["output"]).strip()))
        messages.append(Message(role="user", content=self.render_template(self.user, inputs)))
        return messages



def _label_words(text: str) -> str:
    return text.lower().replace("_", " ").replace("-", " ")


def unnamed_labels(messages: list[Message], labels: list[str]) -> list[str]:
    """The labels a rendered prompt never names. A teacher is asked for one label of the set; one it
    was never told of ("positive or negative?" with a `neutral` label) it rarely answers, and its
    scored probability is near zero whatever the input. A label counts as named in any case, and with
    ``_`` or ``-`` read as a space (``book flight`` names ``book_flight``)."""
    text = _label_words("\n".join(m.content for m in messages))
    return [label for label in labels if _label_words(label) not in text]
