"""Where a model runs: the best device, the dtype it runs in there, and whether it needs a
``device_map`` because it is larger than one GPU. Used by every in-process model we load: the
``hf`` teacher and the student in evaluation (training places its model through TRL's arguments:
``pipeline/training/arguments.py``).

- No CUDA: the CPU in float32, exactly as before (bf16 on a CPU is slow and changes the numerics).
- CUDA: bf16 where the GPU supports it (Ampere and later), else float32 (fp16 overflows in the
  activations of models trained in bf16).
- A model whose weights in that dtype exceed ``GPU_FILL`` of one GPU's memory: ``device_map="auto"``
  (accelerate spreads the layers over every GPU, then the CPU) instead of ``.to("cuda")``.

``placement()`` is a pure function of the facts ``hardware()`` reads, so the CPU test suite checks
every branch without a GPU.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

GPU_FILL = 0.8  # leave a fifth of the GPU for activations and the KV cache of a batch
_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2}


@dataclass(frozen=True)
class Hardware:
    cuda: bool
    bf16: bool = False
    gpu_bytes: tuple[int, ...] = ()  # total memory of each visible GPU


@dataclass(frozen=True)
class Placement:
    device: str  # "cuda" or "cpu": where inputs go (with a device_map, where the first layers are)
    dtype: str  # a torch dtype's name
    device_map: str | None = None

    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)

    def from_pretrained_kwargs(self) -> dict:
        kwargs = {"dtype": self.torch_dtype()}
        if self.device_map:
            kwargs["device_map"] = self.device_map
        return kwargs

    def place(self, model):
        """The loaded model on its device (a device_map placed it already)."""
        return model if self.device_map else model.to(self.device)


def hardware() -> Hardware:
    import torch

    if not torch.cuda.is_available():
        return Hardware(cuda=False)
    sizes = tuple(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count()))
    return Hardware(cuda=True, bf16=bool(torch.cuda.is_bf16_supported()), gpu_bytes=sizes)


def placement(hw: Hardware, weight_bytes: int | None = None) -> Placement:
    """Where a model of ``weight_bytes`` (in the dtype it will run in; None: unknown, assume it fits) runs."""
    if not hw.cuda:
        return Placement("cpu", "float32")
    dtype = "bfloat16" if hw.bf16 else "float32"
    one_gpu = min(hw.gpu_bytes) if hw.gpu_bytes else 0
    too_big = weight_bytes is not None and one_gpu and weight_bytes > GPU_FILL * one_gpu
    return Placement("cuda", dtype, "auto" if too_big else None)


def weight_bytes(model_dir: Path | str, dtype: str) -> int | None:
    """The weights' size once loaded in ``dtype``: the files' size, rescaled from the dtype they were
    saved in (config.json's ``dtype`` / ``torch_dtype``; float32 when it names none)."""
    folder = Path(model_dir)
    files = list(folder.glob("*.safetensors")) or list(folder.glob("*.bin"))
    if not files:
        return None
    saved = "float32"
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        saved = str(config.get("dtype") or config.get("torch_dtype") or "float32").replace("torch.", "")
    except (OSError, ValueError):
        pass
    on_disk = sum(f.stat().st_size for f in files)
    return on_disk * _BYTES.get(dtype, 4) // _BYTES.get(saved, 4)


def placement_for(model_dir: Path | str, hw: Hardware | None = None) -> Placement:
    """The placement of the model saved in ``model_dir`` on this machine (or on ``hw``)."""
    hw = hw or hardware()
    first = placement(hw)
    return placement(hw, weight_bytes(model_dir, first.dtype)) if hw.cuda else first
