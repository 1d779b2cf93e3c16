"""Where keys come from (``.env`` in the working directory, then the task folder; the real
environment wins) and the default sampling params, which are shown rather than silent."""
from __future__ import annotations

import pytest

from pipeline.cli import main as cli_main
from pipeline.config import load_task
from pipeline.stages.generate import run_generate
from tests.fakes.server import FakeServer
from tests.fakes.tasks import FAKE_ANTHROPIC_KEY, FAKE_OPENAI_KEY, make_task, texts

VARS = ("DISTILL_TEST_A", "DISTILL_TEST_B", "DISTILL_TEST_C", "TEAM_ANTHROPIC_KEY")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, data_root):
    for name in VARS:  # set then delete: monkeypatch then removes whatever a .env added
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)


def test_real_variables_win_then_the_working_directory_then_the_task_folder(tmp_path, monkeypatch, capsys):
    folder = make_task(tmp_path, teacher={"base_url": "http://127.0.0.1:9/v1"}, inputs=texts(1))
    (folder / ".env").write_text("DISTILL_TEST_A=task\nDISTILL_TEST_B=task\nDISTILL_TEST_C=task\n")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    (cwd / ".env").write_text("DISTILL_TEST_A=cwd\nDISTILL_TEST_B=cwd\nDISTILL_TEST_C=\n")
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("DISTILL_TEST_A", "real")
    assert cli_main(["validate", str(folder)]) == 0
    import os

    # An empty value (copied from .env.example) does not hide the task folder's.
    assert [os.environ[v] for v in VARS[:3]] == ["real", "cwd", "task"]


def test_a_key_in_the_task_folders_env_is_used_from_any_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with FakeServer() as srv:
        folder = make_task(tmp_path, teacher={"backend": "anthropic", "model": "claude-haiku-4-5", "base_url": srv.base,
                                              "api_key_env": "TEAM_ANTHROPIC_KEY", "params": {"max_tokens": 5}},
                           inputs=texts(2))
        # Without the .env the run stops at the missing key, naming it.
        assert cli_main(["generate", str(folder), "--quiet"]) == 2
        assert "TEAM_ANTHROPIC_KEY is not set" in capsys.readouterr().err
        (folder / ".env").write_text(f"TEAM_ANTHROPIC_KEY={FAKE_ANTHROPIC_KEY}\n")
        assert cli_main(["generate", str(folder), "--quiet"]) == 0
        assert srv.stats()["n_served"] == 2
    assert FAKE_ANTHROPIC_KEY not in capsys.readouterr().err


def test_the_default_params_are_shown_by_validate_and_preview(tmp_path, capsys):
    folder = make_task(tmp_path, teacher={"base_url": "http://127.0.0.1:9/v1"}, inputs=texts(1))
    assert cli_main(["validate", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "teacher.params is not set" in out and "'max_tokens': 64" in out and "cut at 64 tokens" in out
    assert cli_main(["preview", str(folder), "-n", "0"]) == 0
    out = capsys.readouterr().out
    assert "params sent: {'temperature': 0.0, 'max_tokens': 64} (the default)" in out
    chosen = make_task(tmp_path, teacher={"params": {"max_tokens": 500}}, inputs=texts(1), name="chosen")
    assert cli_main(["validate", str(chosen)]) == 0
    assert "teacher.params" not in capsys.readouterr().out


def test_generate_warns_when_answers_stop_at_max_tokens(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI_KEY)
    with FakeServer() as srv:  # its answers are 5 tokens long
        folder = make_task(tmp_path, teacher={"base_url": srv.url, "params": {"max_tokens": 3}}, inputs=texts(4))
        manifest = run_generate(load_task(folder), quiet=False)
    assert manifest["counts"]["stopped_at_max_tokens"] == 4
    err = capsys.readouterr().err
    assert "warning: 4 of 4 answers stopped at max_tokens=3 and are cut short" in err


@pytest.mark.parametrize("command", ["generate", "curate", "train", "evaluate", "run", "push"])
def test_every_stage_takes_q_for_quiet(command, capsys):
    """`distill evaluate sentiment -q` was "unrecognized arguments: -q" where train and curate took it."""
    with pytest.raises(SystemExit) as exc:
        cli_main([command, "--help"])
    assert exc.value.code == 0
    assert "-q, --quiet" in capsys.readouterr().out
