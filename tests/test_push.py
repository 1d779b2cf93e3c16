"""``distill push`` through the real ``datasets`` and ``huggingface_hub`` clients, against a fake Hub
on loopback (tests/fakes/hub.py) reached through HF_ENDPOINT: what lands in the repos, the cards, the
token's path, and one-line errors."""
from __future__ import annotations

import io
import json

import pandas as pd
import pytest
import yaml

from pipeline.cli import main as cli
from pipeline.config.task import load_task
from tests.curate_fixtures import edit_task_yaml
from tests.fakes.hub import FakeHub
from tests.fakes.server import FakeServer

TOKEN = "hf_FakeWriteToken0123456789"


@pytest.fixture
def hub(monkeypatch):
    fake = FakeHub(token=TOKEN)
    with FakeServer(extra_routes=[fake.hook]) as srv:
        fake.base_url = srv.base
        # Both clients read HF_ENDPOINT and HF_HUB_OFFLINE once, at import (conftest sets offline):
        # set their module constants as a fresh `HF_ENDPOINT=... distill push` would have them.
        import datasets.config
        import huggingface_hub.constants as hub_constants

        monkeypatch.setenv("HF_ENDPOINT", srv.base)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(hub_constants, "ENDPOINT", srv.base)
        monkeypatch.setattr(hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            srv.base + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(hub_constants, "HF_HUB_DISABLE_XET", True)  # the fake speaks LFS, not Xet
        monkeypatch.setattr(datasets.config, "HF_ENDPOINT", srv.base)
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield fake


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_model_dir):
    """A curated version and a trained student evaluated on its held-out split, as the stages leave them."""
    from pipeline.stages.curate import run_curate
    from pipeline.stages.evaluate import run_evaluate
    from tests.test_evaluate import install_student, make_task, write_held_out

    root = tmp_path_factory.mktemp("push")
    mp = pytest.MonkeyPatch()
    mp.setenv("DISTILL_DATA_DIR", str(root / "data"))
    mp.setenv("DISTILL_MODELS_DIR", str(root / "models"))
    folder = make_task(root)
    edit_task_yaml(folder, split={"eval_fraction": 0.5})
    write_held_out(root, folder)
    version = run_curate(load_task(folder), quiet=True)["version"]
    model_dir = install_student(tiny_model_dir, root, "senti", dataset_version=version)
    report = run_evaluate(load_task(folder), quiet=True)
    yield folder, root, version, model_dir, report
    mp.undo()


@pytest.fixture
def task_env(evaluated, monkeypatch):
    root = evaluated[1]
    monkeypatch.setenv("DISTILL_DATA_DIR", str(root / "data"))
    monkeypatch.setenv("DISTILL_MODELS_DIR", str(root / "models"))
    return evaluated


def test_push_publishes_the_dataset_version_with_its_card_and_the_model_with_its_figures(hub, task_env, capsys):
    folder, root, version, model_dir, report = task_env
    assert cli(["push", str(folder), "--dataset-repo", "acme/senti-data", "--model-repo", "acme/senti-student",
                "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["dataset"]["version"] == version and out["model"]["version"] == model_dir.name

    data = hub.repos[("dataset", "acme/senti-data")]
    parquet = {p: b for p, b in data.files.items() if p.endswith(".parquet")}
    assert sorted(p.split("-")[0] for p in parquet) == ["data/eval", "data/train"]
    local = json.loads((root / "data" / "senti" / "versions" / version / "manifest.json").read_text())
    rows = {p.split("/")[1].split("-")[0]: len(pd.read_parquet(io.BytesIO(b))) for p, b in parquet.items()}
    assert rows == {"train": local["counts"]["train"], "eval": local["counts"]["eval"]}
    card = data.files["README.md"].decode()
    assert "path: data/train-*" in card  # the Hub's parquet configs, not the local JSONL ones
    assert f"dataset version {version}" in card and "## Dropped examples" in card  # our card's text
    assert data.tags == {version: data.sha} and data.commits[0] == f"distill: dataset version {version}"

    model = hub.repos[("model", "acme/senti-student")]
    assert {"config.json", "model.safetensors", "report.json", "train_manifest.json"} <= set(model.files)
    assert len(model.commits) == 1 and model.tags == {model_dir.name: model.sha}  # weights and card together
    model_card = model.files["README.md"].decode()
    meta = yaml.safe_load(model_card.split("---\n")[1])
    results = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    quality = report["quality"]
    assert results[quality["metric"]] == pytest.approx(quality["student"], abs=1e-6)
    assert meta["datasets"] == ["acme/senti-data"] and "distillation" in meta["tags"]
    assert (model_dir / "report.md").read_text().strip() in model_card  # the report's figures, as written
    assert not (model_dir / "README.md").exists()  # the local folder is left as training wrote it
    assert set(hub.authorizations) == {f"Bearer {TOKEN}"}


def test_a_refused_token_is_one_line_without_the_token(hub, task_env, monkeypatch, capsys):
    folder = task_env[0]
    monkeypatch.setenv("HF_TOKEN", "hf_SomeoneElsesToken987654")
    assert cli(["push", str(folder), "--model-repo", "acme/senti-student"]) == 6
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "401" in err and "HF_TOKEN" in err
    assert "hf_SomeoneElsesToken987654" not in err and not hub.repos


def test_missing_token_bad_repo_and_no_target_are_config_errors_before_any_request(hub, task_env, monkeypatch,
                                                                                    capsys):
    folder = task_env[0]
    assert cli(["push", str(folder), "--model-repo", "not a repo"]) == 2
    assert "--model-repo 'not a repo': not a Hub repo id; use OWNER/NAME" in capsys.readouterr().err
    assert cli(["push", str(folder)]) == 2
    assert "name --dataset-repo OWNER/NAME, --model-repo OWNER/NAME, or both" in capsys.readouterr().err
    assert cli(["push", str(folder), "--dataset-repo", "acme/d", "--dataset-version", "19990101T000000Z"]) == 2
    assert "--dataset-version 19990101T000000Z: not in" in capsys.readouterr().err
    monkeypatch.delenv("HF_TOKEN")
    assert cli(["push", str(folder), "--dataset-repo", "acme/d"]) == 2
    assert "HF_TOKEN is not set" in capsys.readouterr().err
    assert hub.authorizations == []


def test_a_model_never_evaluated_is_refused_with_the_fix(hub, task_env, tmp_path, tiny_model_dir, capsys):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_model_dir, bare)
    assert cli(["push", str(task_env[0]), "--model-repo", "acme/x", "--model", str(bare)]) == 2
    err = capsys.readouterr().err
    assert f"{bare / 'report.json'}: missing; run `distill evaluate`" in err and not hub.repos
