"""``distill push <task>``: publish a dataset version and a trained student to the Hugging Face Hub.

Reads:  data/<task>/versions/<version>/ (--dataset-version; default: the version the pushed model
        was trained on, else the latest), models/<task>/<version>/ (--model; default: the latest)
Writes: the Hub repos named by --dataset-repo and --model-repo (one or both): a commit each, and a
        tag naming the version. Prints their URLs (``--quiet``: one JSON line).

The token is ``HF_TOKEN``, from the environment or ``.env`` only, checked before anything is read;
``HF_ENDPOINT`` points at another Hub. The dataset goes first, so the model card can link to it.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pipeline.config.task import TaskFolder, load_task
from pipeline.errors import ConfigError
from pipeline.paths import TaskPaths

HELP = "Publish a dataset version (with its card) and the student (with its evaluation as model card) to the Hub."
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def hub_token() -> str:
    token = os.environ.get("HF_TOKEN", "").strip()
    if not token:
        raise ConfigError("HF_TOKEN is not set: create a write token at huggingface.co/settings/tokens and put "
                          "HF_TOKEN=... in the environment or .env")
    return token


def _check_repo(flag: str, repo_id: str | None) -> None:
    if repo_id is not None and not _REPO_ID.match(repo_id):
        raise ConfigError(f"{flag} {repo_id!r}: not a Hub repo id; use OWNER/NAME, e.g. my-org/{flag[2:-5]}-sentiment")


def run_push(task: TaskFolder, *, dataset_repo: str | None = None, model_repo: str | None = None,
             dataset_version: str | None = None, model: str | Path | None = None, private: bool = False,
             quiet: bool = False) -> dict[str, Any]:
    """Push what the repos name; returns ``{"dataset": {...}, "model": {...}}`` (repo, version, url, commit)."""
    from pipeline import hub
    from pipeline.stages.evaluate import read_train_manifest, resolve_model_dir

    if not dataset_repo and not model_repo:
        raise ConfigError("distill push: nothing to publish; name --dataset-repo OWNER/NAME, --model-repo OWNER/NAME, "
                          "or both")
    _check_repo("--dataset-repo", dataset_repo)
    _check_repo("--model-repo", model_repo)
    token = hub_token()
    say = (lambda msg: None) if quiet else (lambda msg: print(f"push: {msg}", flush=True))
    model_dir = resolve_model_dir(task, model) if model_repo else None
    out: dict[str, Any] = {}
    if dataset_repo:
        named_by = "--dataset-version"
        if dataset_version is None and model_dir is not None:
            dataset_version = read_train_manifest(model_dir).get("dataset_version")
            named_by = f"{model_dir / 'train_manifest.json'}: dataset_version"
        vdir = TaskPaths(task.name).version_dir(dataset_version)
        if not vdir.is_dir():
            raise ConfigError(f"{named_by} {vdir.name}: not in {vdir.parent}; pass --dataset-version one of its folders")
        say(f"dataset version {vdir.name} -> {dataset_repo}")
        out["dataset"] = hub.push_dataset(vdir, dataset_repo, token, private=private)
        say(f"published {out['dataset']['url']} (tag {vdir.name})")
    if model_dir is not None:
        say(f"student {model_dir.name} -> {model_repo}")
        out["model"] = hub.push_model(model_dir, model_repo, token, private=private, dataset_repo=dataset_repo)
        say(f"published {out['model']['url']} (tag {model_dir.name})")
    return out


def add_arguments(parser) -> None:
    parser.add_argument("task", help="Task folder (prompts/<task>) or task name.")
    parser.add_argument("--dataset-repo", metavar="OWNER/NAME", help="Hub dataset repo for the dataset version.")
    parser.add_argument("--model-repo", metavar="OWNER/NAME", help="Hub model repo for the trained student.")
    parser.add_argument("--dataset-version", metavar="VERSION",
                        help="Dataset version folder (default: the pushed model's, else the latest).")
    parser.add_argument("--model", metavar="PATH", help="Student model folder (default: models/<task>/latest).")
    parser.add_argument("--private", action="store_true", help="Create the repos as private.")
    parser.add_argument("-q", "--quiet", action="store_true", help="No progress; end with one JSON line.")


def main(args) -> int:
    task = load_task(args.task)
    if args.quiet:  # cron runs: no upload progress bars either
        import datasets
        from huggingface_hub.utils import disable_progress_bars

        datasets.disable_progress_bars()
        disable_progress_bars()
    out = run_push(task, dataset_repo=args.dataset_repo, model_repo=args.model_repo,
                   dataset_version=args.dataset_version, model=args.model, private=args.private, quiet=args.quiet)
    if args.quiet:
        print(json.dumps(out))
    return 0
