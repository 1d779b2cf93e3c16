"""Rendering: sandboxed, strict, and input values are data, never templates."""
from __future__ import annotations

import pytest

from pipeline.errors import TemplateError
from pipeline.prompts import PromptRenderer


def make(tmp_path, files):
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return PromptRenderer(tmp_path, {"labels": ["pos", "neg"]})


def test_renders_system_fewshot_and_user(tmp_path):
    r = make(
        tmp_path,
        {
            "system.j2": "Answer {{ labels | join(' or ') }}.",
            "user.j2": "Text: {{ text }}",
            "examples.yaml": "- inputs: {text: good}\n  output: pos\n",
        },
    )
    msgs = r.render({"text": "fine"})
    assert [(m.role, m.content) for m in msgs] == [
        ("system", "Answer pos or neg."),
        ("user", "Text: good"),
        ("assistant", "pos"),
        ("user", "Text: fine"),
    ]


def test_input_values_are_never_rendered_as_templates(tmp_path):
    r = make(tmp_path, {"user.j2": "Text: {{ text }}"})
    evil = "{{ labels }} {% for x in range(3) %}x{% endfor %} {{ ''.__class__ }}"
    assert r.render({"text": evil})[-1].content == f"Text: {evil}"


def test_sandbox_blocks_unsafe_attribute_access(tmp_path):
    r = make(tmp_path, {"user.j2": "{{ text.__class__.__mro__[1].__subclasses__() }}"})
    with pytest.raises(TemplateError, match="user.j2"):
        r.render({"text": "x"})


def test_undefined_variable_is_an_error_with_line(tmp_path):
    r = make(tmp_path, {"user.j2": "a\nb\n{{ nope }}"})
    with pytest.raises(TemplateError, match=r"user\.j2:3: 'nope' is undefined"):
        r.render({"text": "x"})


def test_bad_examples_file(tmp_path):
    with pytest.raises(TemplateError, match="examples.yaml: example 1"):
        make(tmp_path, {"user.j2": "{{ text }}", "examples.yaml": "- {text: a}\n"})


def test_a_byte_order_mark_is_not_prompt_text(tmp_path):
    """Notepad saves UTF-8 with a byte-order mark; it reached the teacher as an invisible first character."""
    r = make(tmp_path, {"system.j2": "\ufeffAnswer {{ labels | join(' or ') }}.", "user.j2": "\ufeffText: {{ text }}",
                        "examples.yaml": "\ufeff- inputs: {text: good}\n  output: pos\n"})
    msgs = r.render({"text": "fine"})
    assert [m.content for m in msgs] == ["Answer pos or neg.", "Text: good", "pos", "Text: fine"]
