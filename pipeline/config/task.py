"""The whole ``task.yaml``, and loading it with one-line errors that name the file and the field."""
from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from pipeline import yaml_io
from pipeline.config.base import Section
from pipeline.config.curate import DecontamConfig, DedupeConfig, FiltersConfig, SplitConfig
from pipeline.config.evaluate import EvalConfig
from pipeline.config.inputs import InputsConfig
from pipeline.config.output import OutputConfig
from pipeline.config.teacher import TeacherConfig
from pipeline.config.train import StudentConfig, TrainConfig
from pipeline.env import load_env_file
from pipeline.errors import ConfigError

PROMPTS_DIR = Path("prompts")


class TaskConfig(Section):
    """One task: its teacher, inputs, output kind, and the settings of every stage."""

    name: str = Field(description="Task name; also the folder under data/ and models/.")
    description: str = ""
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    inputs: InputsConfig
    output: OutputConfig
    filters: FiltersConfig = Field(default_factory=FiltersConfig)
    dedupe: DedupeConfig = Field(default_factory=DedupeConfig)
    decontam: DecontamConfig = Field(default_factory=DecontamConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, v: str) -> str:
        if not v or any(c in v for c in "/\\ ") or v.startswith("."):
            raise ValueError("must be a plain folder name (letters, digits, _ or -)")
        return v


@dataclass(frozen=True)
class TaskFolder:
    """A loaded task: its folder, its config, and helpers to find its files."""

    path: Path
    config: TaskConfig

    @property
    def name(self) -> str:
        return self.config.name

    def file(self, relative: str) -> Path:
        """A path named in task.yaml: relative to the task folder unless absolute."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self.path / p

    def template_hashes(self) -> dict[str, str]:
        """SHA-256 (first 16 hex digits) of every template file, for manifests and dataset cards."""
        out = {}
        for p in sorted(self.path.glob("*.j2")) + sorted(self.path.glob("*.yaml")):
            out[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        return out


def resolve_task_path(task: str | Path) -> Path:
    """Accept ``prompts/sentiment``, a path to its task.yaml, or the bare name ``sentiment``."""
    p = Path(task)
    if p.name == "task.yaml":
        p = p.parent
    if not p.exists() and not p.is_absolute() and (PROMPTS_DIR / p).exists():
        p = PROMPTS_DIR / p
    if not p.is_dir():
        raise ConfigError(f"{task}: no such task folder; expected prompts/<task>/ with a task.yaml")
    return p


class TaskConfigError(ConfigError):
    """task.yaml is invalid; ``problems`` holds one line per error (the message shows the first)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        more = f" (+{len(problems) - 1} more; `distill validate` lists them)" if len(problems) > 1 else ""
        super().__init__(problems[0] + more)


def _section_keys(model: type[BaseModel], path: tuple) -> list[str]:
    """The keys the section at ``path`` (e.g. ("eval",)) accepts, for a did-you-mean."""
    for key in path:
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            return []
        nested = [t for t in (field.annotation, *get_args(field.annotation))
                  if isinstance(t, type) and issubclass(t, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)


def validation_error_lines(source: str, exc: ValidationError, model: type[BaseModel] | None = None) -> list[str]:
    """One line per error: ``file: field.path: what is wrong and how to fix it``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            key = str(err["loc"][-1])
            close = difflib.get_close_matches(key, _section_keys(model or TaskConfig, err["loc"][:-1]), n=1)
            fix = f"did you mean '{close[0]}'?" if close else "remove it or fix its spelling (see docs/architecture.md)"
            msg = f"unknown key '{key}'; {fix}"
        elif err["type"] == "missing":
            msg = "required key is missing; add it"
        lines.append(f"{source}: {loc}: {msg}")
    return lines


def load_task(task: str | Path) -> TaskFolder:
    """Load and validate ``prompts/<task>/task.yaml``. Raises ConfigError with a one-line message."""
    folder = resolve_task_path(task)
    load_env_file(folder)  # a key kept next to the task; the environment and ./.env come first
    yaml_path = folder / "task.yaml"
    try:
        text = yaml_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{yaml_path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = yaml_io.load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{yaml_path}:{where}: {problem}; fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{yaml_path}: expected a mapping of keys (name, teacher, inputs, output, ...)")
    try:
        config = TaskConfig.model_validate(data)
    except ValidationError as exc:
        raise TaskConfigError(validation_error_lines(str(yaml_path), exc)) from None
    return TaskFolder(path=folder, config=config)
