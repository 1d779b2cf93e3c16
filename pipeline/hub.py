"""Publishing to the Hugging Face Hub: a dataset version with its card, and a trained student with
a model card that carries its evaluation report's figures (``distill push``).

Reads:  data/<task>/versions/<v>/dataset/ (the DatasetDict), README.md (the card), manifest.json;
        models/<task>/<v>/ (weights, tokenizer, train_manifest.json, report.json, report.md, plots)
Writes: nothing here; on the Hub, one commit per repo and a tag naming the version.

Through the real clients only (``datasets.DatasetDict.push_to_hub``, ``huggingface_hub.HfApi``), so
``HF_ENDPOINT`` points the whole thing at another Hub (tests use a fake one on loopback). The token
is passed in, never read from a file or logged; Hub errors become one ``HubError`` line.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.errors import DistillError

# A model folder's files that are the run's bookkeeping, not the model: they stay local.
_MODEL_IGNORE = ["checkpoint-*", "*.tmp", "runs/*", ".*"]


class HubError(DistillError):
    """The Hub refused or could not be reached; what was committed before stays there."""

    exit_code = 6


def hub_error(exc: Exception, where: str) -> HubError:
    """One line for a huggingface_hub / network exception (the token is redacted by DistillError)."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    if status == 401:
        return HubError(f"{where}: the Hub refused the token (401); set HF_TOKEN to a token with write access")
    if status == 403:
        return HubError(f"{where}: the token may not write to this repo (403); use a write token for its owner")
    detail = f"HTTP {status}: {first}" if status else f"{type(exc).__name__}: {first}"
    return HubError(f"{where}: {detail}; nothing after this step was published, re-run `distill push` to retry")


def _hub_errors() -> tuple[type[BaseException], ...]:
    """What the Hub clients raise for a refusal or a network failure (their HTTP stack is httpx2)."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    return HfHubHTTPError, httpx2.HTTPError, OSError, ValueError


def _read_json(path: Path, fix: str) -> dict[str, Any]:
    from pipeline.errors import InputDataError

    if not path.is_file():
        raise InputDataError(f"{path}: missing; {fix}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputDataError(f"{path}: not valid JSON ({exc}); {fix}") from None


# -- the dataset ----------------------------------------------------------------------------------
def dataset_card_for_hub(local_card: str, pushed_card: str, repo_id: str) -> str:
    """Our card's text under the metadata ``push_to_hub`` wrote (its parquet ``configs`` and
    ``dataset_info``): the local card's own front matter names the local JSONL files instead."""
    from huggingface_hub import DatasetCard

    card = DatasetCard(pushed_card)
    body = DatasetCard(local_card).text if local_card.startswith("---") else local_card
    card.text = f"\nOn the Hub: `datasets.load_dataset(\"{repo_id}\")`.\n\n{body.lstrip()}"
    return str(card)


def push_dataset(version_dir: Path, repo_id: str, token: str, *, private: bool = False) -> dict[str, Any]:
    """Publish one dataset version: its splits as parquet, its card as README.md, a tag ``version``."""
    from datasets import DatasetDict
    from huggingface_hub import HfApi

    version = version_dir.name
    card_path = version_dir / "README.md"
    if not (version_dir / "dataset").is_dir() or not card_path.is_file():
        from pipeline.errors import InputDataError

        raise InputDataError(f"{version_dir}: no dataset/ or README.md; re-run `distill curate` to rebuild the version")
    api = HfApi(token=token)
    where = f"push dataset {repo_id}"
    try:
        DatasetDict.load_from_disk(str(version_dir / "dataset")).push_to_hub(
            repo_id, token=token, private=private, commit_message=f"distill: dataset version {version}")
        pushed = api.hf_hub_download(repo_id, "README.md", repo_type="dataset")
        card = dataset_card_for_hub(card_path.read_text(encoding="utf-8"), Path(pushed).read_text(encoding="utf-8"),
                                    repo_id)
        commit = api.upload_file(path_or_fileobj=card.encode("utf-8"), path_in_repo="README.md", repo_id=repo_id,
                                 repo_type="dataset", commit_message=f"distill: dataset card of version {version}")
        api.create_tag(repo_id, tag=version, repo_type="dataset", exist_ok=True)
    except _hub_errors() as exc:
        raise hub_error(exc, where) from None
    return {"repo": repo_id, "version": version, "url": _repo_url(api, repo_id, "dataset"),
            "commit": getattr(commit, "oid", None)}


# -- the model ------------------------------------------------------------------------------------
def model_card(report: dict[str, Any], train: dict[str, Any], report_md: str, *,
               dataset_repo: str | None = None) -> str:
    """README.md for the student: metadata (with the report's figures as model-index results), how
    it was trained, then report.md as evaluate wrote it."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    task = report.get("task") or train.get("task") or "task"
    quality = report.get("quality") or {}
    metrics = (report.get("metrics") or {}).get("student") or {}
    # shares and scores (floats); counts such as ``n`` are not results
    figures = {name: value for name, value in metrics.items() if isinstance(value, float)}
    if isinstance(quality.get("student"), (int, float)) and quality.get("metric"):
        figures.setdefault(quality["metric"], quality["student"])
    source = (report.get("params") or {}).get("eval_source") or "the task's evaluation inputs"
    results = [EvalResult(task_type="text-generation", dataset_type=dataset_repo or task, dataset_name=source,
                          metric_type=name, metric_value=round(float(value), 6))
               for name, value in sorted(figures.items())]
    student = train.get("student") or {}
    base = student.get("model") or student.get("teacher_model")
    data = ModelCardData(model_name=f"{task} student", base_model=base, datasets=[dataset_repo] if dataset_repo else None,
                         library_name="transformers", pipeline_tag="text-generation",
                         tags=["distillation", "distill-pipeline", str(train.get("method") or "sft")],
                         eval_results=results or None)
    params = report.get("params") or {}
    how = f"`{train.get('method', '?')}`"
    if train.get("method") == "kd":
        how += f" (kd_level {train.get('kd_level')}, T={train.get('temperature')}, alpha={train.get('alpha')})"
    data_ref = f"`{train.get('dataset_version', '?')}`" + (f" ([{dataset_repo}](/datasets/{dataset_repo}))"
                                                           if dataset_repo else "")
    lines = [
        f"# {task}: distilled student", "",
        (f"Trained by distill-pipeline with {how} on dataset version {data_ref}; teacher "
         f"`{params.get('teacher', '?')}`; student initialised from `{base or '?'}`."), "",
        ("The evaluation below is `report.md` from `distill evaluate`, unchanged; `report.json` in this "
         "repo holds every figure."), "",
        report_md.strip(), "",
    ]
    return str(ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n" + "\n".join(lines)))


def push_model(model_dir: Path, repo_id: str, token: str, *, private: bool = False,
               dataset_repo: str | None = None) -> dict[str, Any]:
    """Publish a trained, evaluated student folder with its model card, in one commit, tagged with
    its version."""
    from huggingface_hub import CommitOperationAdd, HfApi

    fix = f"run `distill evaluate` on {model_dir} first: the model card carries its figures"
    report = _read_json(model_dir / "report.json", fix)
    train = _read_json(model_dir / "train_manifest.json", "re-run `distill train`") \
        if (model_dir / "train_manifest.json").exists() else {}
    report_md_path = model_dir / "report.md"
    if not report_md_path.is_file():
        from pipeline.errors import InputDataError

        raise InputDataError(f"{report_md_path}: missing; {fix}")
    card = model_card(report, train, report_md_path.read_text(encoding="utf-8"), dataset_repo=dataset_repo)
    version = model_dir.name
    api = HfApi(token=token)
    # The card goes in the same commit as the weights, so the repo is never without one; the local
    # folder is left as training wrote it.
    operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(model_dir / rel))
                  for rel in _model_files(model_dir)]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8")))
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.create_commit(repo_id, operations, repo_type="model", commit_message=f"distill: student {version}")
        api.create_tag(repo_id, tag=version, repo_type="model", exist_ok=True)
    except _hub_errors() as exc:
        raise hub_error(exc, f"push model {repo_id}") from None
    return {"repo": repo_id, "version": version, "url": _repo_url(api, repo_id, "model"),
            "commit": getattr(commit, "oid", None), "files": len(operations)}


def _model_files(model_dir: Path) -> list[str]:
    """The folder's files, relative and sorted, without the run's bookkeeping (checkpoints, logs)."""
    from fnmatch import fnmatch

    rels = sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file())
    return [r for r in rels if r != "README.md" and not any(fnmatch(r, pat) for pat in _MODEL_IGNORE)]


def _repo_url(api: Any, repo_id: str, kind: str) -> str:
    return f"{api.endpoint}/{'datasets/' if kind == 'dataset' else ''}{repo_id}"
