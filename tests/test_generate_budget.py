"""Budget caps stop a run cleanly, say so, keep every answer, and a re-run resumes."""
from __future__ import annotations

import json

import pytest

from pipeline.cli import main as cli_main
from pipeline.config import load_task
from pipeline.errors import BudgetExceeded, ConfigError
from pipeline.paths import TaskPaths
from pipeline.records import Record, read_jsonl
from pipeline.stages.generate import run_generate
from tests.fakes.server import FakeServer
from tests.fakes.tasks import FAKE_OPENAI_KEY, make_task, texts


@pytest.fixture(autouse=True)
def _keys(monkeypatch, data_root):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI_KEY)


@pytest.fixture(scope="module")
def server():
    with FakeServer() as srv:
        yield srv


def _n_records() -> int:
    return sum(1 for _ in read_jsonl(TaskPaths("faketask").generated_jsonl, Record))


def test_max_requests_stops_the_run_and_a_rerun_resumes(tmp_path, server, capsys):
    before = server.stats()["n_served"]
    folder = make_task(tmp_path, teacher={"base_url": server.url, "budget": {"max_requests": 10}}, inputs=texts(25))
    assert cli_main(["generate", str(folder)]) == BudgetExceeded.exit_code
    err = capsys.readouterr().err
    assert "max_requests=10 reached" in err and "re-run to resume" in err
    assert server.stats()["n_served"] - before == 10
    assert _n_records() == 10
    manifest = json.loads((TaskPaths("faketask").generated_dir / "manifest.json").read_text())
    assert manifest["complete"] is False and "max_requests" in manifest["stopped_by"]

    assert cli_main(["generate", str(folder), "--quiet"]) == BudgetExceeded.exit_code
    assert _n_records() == 20
    assert cli_main(["generate", str(folder), "--quiet"]) == 0
    assert _n_records() == 25
    assert server.stats()["n_served"] - before == 25  # nothing was paid twice
    assert server.stats()["duplicates"] == 0


def test_a_cost_cap_never_treats_an_unknown_price_as_free(tmp_path, server):
    before = server.stats()["n_received"]
    folder = make_task(tmp_path, teacher={"base_url": server.url, "model": "my-private-model",
                                          "budget": {"max_cost_usd": 1.0}}, inputs=texts(3))
    with pytest.raises(ConfigError, match="price of 'my-private-model'.*DISTILL_PRICES"):
        run_generate(load_task(folder), quiet=True)
    assert server.stats()["n_received"] == before  # refused before any request


def test_a_price_file_from_distill_prices_lets_the_cost_cap_run(tmp_path, server, monkeypatch):
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  my-private-model: {input: 1000.0, output: 1000.0}\n")
    monkeypatch.setenv("DISTILL_PRICES", str(prices))
    # A worst case of ~30 tokens at $1000/M is ~$0.03 per request: a $0.10 cap admits 3 at a time.
    folder = make_task(tmp_path, teacher={"base_url": server.url, "model": "my-private-model",
                                          "params": {"max_tokens": 16}, "budget": {"max_cost_usd": 0.10}},
                       inputs=texts(20))
    with pytest.raises(BudgetExceeded, match="max_cost_usd=0.1 reached") as info:
        run_generate(load_task(folder), quiet=True)
    manifest = json.loads((TaskPaths("faketask").generated_dir / "manifest.json").read_text())
    assert 0 < manifest["cost_usd"] <= 0.10
    assert 3 <= _n_records() < 20
    assert "$" in str(info.value)


def test_max_tokens_counts_prompt_and_completion_tokens(tmp_path, server):
    folder = make_task(tmp_path, teacher={"base_url": server.url, "params": {"max_tokens": 8},
                                          "budget": {"max_tokens": 120}}, inputs=texts(30))
    with pytest.raises(BudgetExceeded, match="max_tokens=120"):
        run_generate(load_task(folder), quiet=True)
    manifest = json.loads((TaskPaths("faketask").generated_dir / "manifest.json").read_text())
    used = manifest["tokens"]["prompt"] + manifest["tokens"]["completion"]
    assert 0 < used <= 120
