"""`distill validate`: every bad input is one line naming the file and the field or line, no traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from tests.conftest import REPO


def write_task(folder: Path, config: dict, files: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "task.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    defaults = {"user.j2": "Text: {{ text }}", "inputs.jsonl": '{"text": "hello"}\n'}
    for name, text in {**defaults, **(files or {})}.items():
        if text is not None:
            (folder / name).write_text(text, encoding="utf-8")
    return folder


def base_config(**overrides) -> dict:
    cfg = {
        "name": "t",
        "teacher": {"backend": "hf", "model": "tiny"},
        "inputs": {"source": {"path": "inputs.jsonl"}},
        "output": {"kind": "label", "labels": ["yes", "no"]},
    }
    cfg.update(overrides)
    return cfg


def run_validate(folder: Path, capsys) -> tuple[int, list[str]]:
    rc = main(["validate", str(folder)])
    out = capsys.readouterr()
    lines = [ln for ln in (out.out + out.err).splitlines() if ln.strip()]
    assert "Traceback" not in out.out + out.err
    return rc, lines


def test_bundled_tasks_are_valid(capsys):
    for name in ("sentiment", "ticket_extraction", "summarize", "review_summary"):
        rc, lines = run_validate(REPO / "prompts" / name, capsys)
        assert rc == 0, lines
        assert lines[-1].startswith("ok:")


def test_a_scored_label_task_is_not_warned_about_logprobs_or_max_tokens(capsys):
    """The demo's teacher scores every label (one prefill, a full distribution): it needs neither
    teacher.top_logprobs for soft labels nor teacher.params.max_tokens, so neither warning is true."""
    rc, lines = run_validate(REPO / "prompts" / "sentiment", capsys)
    assert rc == 0, lines
    text = "\n".join(lines)
    assert "one-hot labels" not in text and "teacher.params" not in text, text


def test_misspelt_key_exits_nonzero_naming_the_key(tmp_path, capsys):
    cfg = base_config()
    cfg["teacher"]["temprature"] = 0.2
    rc, lines = run_validate(write_task(tmp_path / "t", cfg), capsys)
    assert rc != 0
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1
    assert "task.yaml" in errors[0] and "teacher.temprature" in errors[0] and "unknown key" in errors[0]


def test_wrong_type_names_the_field(tmp_path, capsys):
    cfg = base_config()
    cfg["teacher"]["top_logprobs"] = "five"
    rc, lines = run_validate(write_task(tmp_path / "t", cfg), capsys)
    assert rc != 0 and any("teacher.top_logprobs" in ln and "integer" in ln for ln in lines)


def test_every_config_problem_gets_its_own_line(tmp_path, capsys):
    cfg = base_config()
    cfg["teacher"]["temprature"] = 0.2
    cfg["split"] = {"eval_fraction": 2}
    rc, lines = run_validate(write_task(tmp_path / "t", cfg), capsys)
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert rc != 0 and len(errors) == 2
    assert any("split.eval_fraction" in e for e in errors)


@pytest.mark.parametrize(
    "labels, expected",
    [([], "label set is empty"), (["yes", "no", "Yes"], "'Yes' is repeated")],
)
def test_bad_label_sets(tmp_path, capsys, labels, expected):
    cfg = base_config(output={"kind": "label", "labels": labels})
    rc, lines = run_validate(write_task(tmp_path / "t", cfg), capsys)
    assert rc != 0 and any("output.labels" in ln and expected in ln for ln in lines)


def test_missing_template_names_the_file(tmp_path, capsys):
    folder = write_task(tmp_path / "t", base_config(), {"user.j2": None})
    rc, lines = run_validate(folder, capsys)
    assert rc != 0 and any("user.j2" in ln and "missing" in ln for ln in lines)


def test_undefined_variable_names_template_line_and_variable(tmp_path, capsys):
    folder = write_task(tmp_path / "t", base_config(), {"user.j2": "Line one\nText: {{ txet }}\n"})
    rc, lines = run_validate(folder, capsys)
    err = next(ln for ln in lines if ln.startswith("error:"))
    assert rc != 0 and "user.j2:2" in err and "'txet' is undefined" in err


def test_template_syntax_error_names_the_line(tmp_path, capsys):
    folder = write_task(tmp_path / "t", base_config(), {"user.j2": "ok\n{% if text %}unclosed\n"})
    rc, lines = run_validate(folder, capsys)
    assert rc != 0 and any("user.j2:" in ln and "syntax" in ln for ln in lines)


def test_unreadable_input_file(tmp_path, capsys):
    cfg = base_config(inputs={"source": {"path": "nowhere.jsonl"}})
    rc, lines = run_validate(write_task(tmp_path / "t", cfg), capsys)
    assert rc != 0 and any("nowhere.jsonl" in ln and "not found" in ln for ln in lines)


def test_malformed_jsonl_row_names_the_line(tmp_path, capsys):
    folder = write_task(tmp_path / "t", base_config(), {"inputs.jsonl": '{"text": "a"}\n{"text": "b"\n'})
    rc, lines = run_validate(folder, capsys)
    assert rc != 0 and any("inputs.jsonl:2" in ln and "malformed JSON" in ln for ln in lines)


def test_malformed_csv_row_names_the_line(tmp_path, capsys):
    cfg = base_config(inputs={"source": {"path": "inputs.csv", "fields": {"text": "body"}}})
    folder = write_task(tmp_path / "t", cfg, {"inputs.csv": 'id,body\n1,"fine"\n2,too,many\n'})
    rc, lines = run_validate(folder, capsys)
    assert rc != 0 and any("inputs.csv:3" in ln and "columns" in ln for ln in lines)


def test_mapped_column_missing_names_the_column(tmp_path, capsys):
    cfg = base_config(inputs={"source": {"path": "inputs.jsonl", "fields": {"text": "body"}}})
    rc, lines = run_validate(write_task(tmp_path / "t", cfg), capsys)
    assert rc != 0 and any("inputs.jsonl:1" in ln and "'body'" in ln for ln in lines)


def test_anthropic_with_logprobs_is_a_config_error(tmp_path, capsys):
    cfg = base_config(teacher={"backend": "anthropic", "model": "claude-haiku-4-5", "top_logprobs": 5})
    rc, lines = run_validate(write_task(tmp_path / "t", cfg), capsys)
    assert rc != 0 and any("teacher" in ln and "no logprobs" in ln for ln in lines)


def test_invalid_yaml_names_the_line(tmp_path, capsys):
    folder = write_task(tmp_path / "t", base_config())
    (folder / "task.yaml").write_text("name: t\nteacher: [unclosed\n", encoding="utf-8")
    rc, lines = run_validate(folder, capsys)
    assert rc != 0 and any("task.yaml" in ln and "line" in ln for ln in lines)


def test_cli_subprocess_prints_one_line_and_no_traceback(tmp_path):
    cfg = base_config()
    cfg["inputs"]["source"]["feilds"] = {}
    folder = write_task(tmp_path / "t", cfg)
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "validate", str(folder)], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "inputs.source.feilds" in proc.stdout


def test_missing_eval_source_names_the_eval_section(tmp_path, capsys):
    cfg = base_config(eval={"source": {"path": "real.csv"}})
    rc, lines = run_validate(write_task(tmp_path / "t", cfg), capsys)
    assert rc != 0 and any("real.csv" in ln and "fix eval.source.path" in ln for ln in lines)


@pytest.mark.parametrize("section, key, suggestion", [("eval", "gold_feild", "gold_field"),
                                                      ("inputs.source", "feilds", "fields"),
                                                      (None, "teachr", "teacher")])
def test_unknown_key_offers_the_closest_known_key(tmp_path, capsys, section, key, suggestion):
    cfg = base_config(eval={})
    target = cfg
    for part in (section.split(".") if section else []):
        target = target[part]
    target[key] = "x" if section else {}
    rc, lines = run_validate(write_task(tmp_path / "t", cfg), capsys)
    where = f"{section}.{key}" if section else key
    assert rc != 0 and any(f"{where}: unknown key '{key}'; did you mean '{suggestion}'?" in ln for ln in lines), lines
