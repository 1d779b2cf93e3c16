"""Build the student: a pretrained local model, or a half-depth copy of a local teacher.

``from_teacher_layers`` is DistilBERT's initialisation (Sanh et al. 2019): take the teacher,
keep every other transformer layer (or the layers a ``layer_map`` names), and keep its embeddings,
final norm and LM head. The student starts close to the teacher's function and shares its
tokenizer, so token-level KD on the teacher's logprobs applies directly.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.config.train import StudentConfig
from pipeline.errors import ConfigError


def resolve_local_model(name_or_path: str, field: str) -> Path:
    """A model name ("smollm2-135m-instruct") or a local folder -> a folder from_pretrained loads."""
    try:
        from pipeline.local_models import resolve_model_path
    except ImportError:  # helper LOCAL's module not there yet: accept local folders only
        p = Path(name_or_path).expanduser()
        if p.is_dir():
            return p
        raise ConfigError(f"{field}: '{name_or_path}' is not a local model folder; give a path to one") from None
    return resolve_model_path(name_or_path)


def default_layer_map(num_layers: int) -> list[int]:
    """Every other layer, starting with the first: 30 -> [0, 2, ..., 28]."""
    return list(range(0, num_layers, 2))


def check_layer_map(layer_map: list[int], num_layers: int) -> list[int]:
    if not layer_map:
        raise ConfigError("student.layer_map: empty; list the teacher layer indices to keep, e.g. [0, 2, 4]")
    bad = [i for i in layer_map if not 0 <= i < num_layers]
    if bad:
        raise ConfigError(f"student.layer_map: index {bad[0]} is outside the teacher's layers 0..{num_layers - 1}")
    if len(set(layer_map)) != len(layer_map):
        raise ConfigError("student.layer_map: a layer is listed twice; each teacher layer may be kept once")
    return list(layer_map)


def decoder_layers(model):
    """The ModuleList of transformer blocks (model.model.layers for Llama, Qwen, Mistral, Gemma...)."""
    backbone = getattr(model, model.base_model_prefix, None) or model.base_model
    layers = getattr(backbone, "layers", None)
    if layers is None:
        raise ConfigError(
            f"student.init from_teacher_layers: cannot find the decoder layers of {type(model).__name__}; "
            "use student.init: pretrained"
        )
    return backbone, layers


def from_teacher_layers(teacher_dir: Path, layer_map: list[int] | None = None, *, dtype=None):
    """Load the teacher and keep only ``layer_map``'s layers (default: every other one)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=dtype or torch.float32)
    backbone, layers = decoder_layers(model)
    keep = check_layer_map(default_layer_map(len(layers)) if layer_map is None else layer_map, len(layers))
    backbone.layers = torch.nn.ModuleList([layers[i] for i in keep])
    for new_idx, layer in enumerate(backbone.layers):
        attn = getattr(layer, "self_attn", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = new_idx  # the KV cache is indexed by position in the stack
    config = model.config.get_text_config()
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    config.num_hidden_layers = len(keep)
    model.config.distill_layer_map = keep  # recorded in config.json: where the student came from
    return model


def build_student(cfg: StudentConfig, *, dtype=None):
    """(model, tokenizer folder, description for the manifest) for the task's ``student:`` section."""
    import torch
    from transformers import AutoModelForCausalLM

    if cfg.init == "from_teacher_layers":
        if not cfg.teacher_model:
            raise ConfigError("student.teacher_model: required for init from_teacher_layers; name a local teacher")
        src = resolve_local_model(cfg.teacher_model, "student.teacher_model")
        model = from_teacher_layers(src, cfg.layer_map, dtype=dtype)
        info = {"init": "from_teacher_layers", "teacher_model": cfg.teacher_model, "path": str(src),
                "layer_map": model.config.distill_layer_map}
        return model, src, info
    if not cfg.model:
        raise ConfigError("student.model: required for init pretrained; name a local model folder")
    src = resolve_local_model(cfg.model, "student.model")
    model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype or torch.float32)
    return model, src, {"init": "pretrained", "model": cfg.model, "path": str(src)}
