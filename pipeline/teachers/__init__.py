"""Teacher backends behind one protocol (``base.Teacher``), and ``make_teacher`` to pick one.

Each backend module is imported only when used, so ``distill --help`` never loads torch or vllm.
"""
from __future__ import annotations

import importlib

from pipeline.config.teacher import TeacherConfig
from pipeline.errors import ConfigError
from pipeline.teachers.base import Teacher, TeacherRequest, TeacherResponse

_BACKENDS = {
    "openai": ("pipeline.teachers.openai_backend", "OpenAITeacher"),
    "anthropic": ("pipeline.teachers.anthropic_backend", "AnthropicTeacher"),
    "hf": ("pipeline.teachers.hf_backend", "HFTeacher"),
    "vllm": ("pipeline.teachers.vllm_backend", "VLLMTeacher"),
}


def make_teacher(cfg: TeacherConfig) -> Teacher:
    """The backend named by ``cfg.backend``, built from ``cfg``."""
    if cfg.backend not in _BACKENDS:
        raise ConfigError(f"teacher.backend: unknown backend '{cfg.backend}'; use one of {', '.join(_BACKENDS)}")
    module_name, class_name = _BACKENDS[cfg.backend]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ConfigError(f"teacher.backend: the '{cfg.backend}' backend is not available in this install") from None
        extra = {"vllm": "pip install 'distill-pipeline[vllm]'", "hf": "pip install 'distill-pipeline[local]'"}
        raise ConfigError(
            f"teacher.backend '{cfg.backend}' needs the package '{exc.name}'; "
            f"{extra.get(cfg.backend, 'pip install ' + str(exc.name))}"
        ) from None
    return getattr(module, class_name)(cfg)


__all__ = ["Teacher", "TeacherRequest", "TeacherResponse", "make_teacher"]
