"""Device, dtype and memory policy, decided once at start from what is present.

:func:`decide_policy` is a pure function of :class:`Hardware` (what the machine
has) and :class:`Footprint` (what the model needs), so every branch is tested
without the hardware. :func:`probe_hardware` and :func:`model_footprint` gather
those facts; only the probe imports torch.

    CUDA, room for the whole model       -> on the GPU, bf16 (fp16 without bf16)
    CUDA, room for the largest component -> model CPU offload (one component on the GPU at a time)
    CUDA, less                           -> sequential CPU offload (layer by layer; slowest GPU mode)
    Apple MPS                            -> on MPS, bf16
    CPU only                             -> fp32 if it fits in RAM, else bf16; runs, slowly, and says so
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GiB = 1024**3
# Activations, VAE decode and the CUDA context need room beyond the weights;
# Qwen-Image at 1328x1328 peaks a few GiB above its weights.
GPU_HEADROOM = 4 * GiB
RAM_HEADROOM = 2 * GiB
COMPONENTS = ("transformer", "text_encoder", "vae")


@dataclass(frozen=True)
class Hardware:
    cuda_devices: tuple[tuple[str, int], ...] = ()  # (name, total bytes)
    cuda_bf16: bool = True
    mps: bool = False
    ram_bytes: int = 0
    cpu_count: int = 1


@dataclass(frozen=True)
class Footprint:
    """Parameter counts per component, read from the safetensors headers."""

    params: dict[str, int] = field(default_factory=dict)

    def bytes_at(self, bytes_per_param: int, component: str | None = None) -> int:
        if component is not None:
            return self.params.get(component, 0) * bytes_per_param
        return sum(self.params.values()) * bytes_per_param

    @property
    def largest(self) -> str:
        return max(self.params, key=lambda k: self.params[k]) if self.params else "transformer"


@dataclass(frozen=True)
class Policy:
    """How the engine places the model. ``offload`` is ``none``, ``model`` or ``sequential``."""

    device: str
    dtype: str  # torch dtype name: float32, bfloat16, float16
    offload: str = "none"
    reason: str = ""
    slow: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_policy(hw: Hardware, fp: Footprint, *, force_device: str | None = None) -> Policy:
    """Choose device, dtype and offload from the facts. ``force_device`` is ``cpu``/``cuda``/``mps``."""
    device = force_device or ("cuda" if hw.cuda_devices else "mps" if hw.mps else "cpu")
    if device == "cuda" and hw.cuda_devices:
        dtype = "bfloat16" if hw.cuda_bf16 else "float16"
        name, total = max(hw.cuda_devices, key=lambda d: d[1])
        need_all = fp.bytes_at(2) + GPU_HEADROOM
        need_largest = fp.bytes_at(2, fp.largest) + GPU_HEADROOM
        gib = f"{total / GiB:.1f} GiB"
        if total >= need_all:
            return Policy("cuda", dtype, "none", f"{name} ({gib}) holds the whole model ({need_all / GiB:.1f} GiB with headroom)")
        if total >= need_largest:
            return Policy(
                "cuda", dtype, "model",
                f"{name} ({gib}) is smaller than the model ({need_all / GiB:.1f} GiB): model CPU offload, one component on the GPU at a time",
            )
        return Policy(
            "cuda", dtype, "sequential",
            f"{name} ({gib}) cannot hold the {fp.largest} ({need_largest / GiB:.1f} GiB): sequential CPU offload, slow",
            slow=True,
        )
    if device == "mps":
        return Policy("mps", "bfloat16", "none", "Apple GPU (MPS)")
    # CPU: fp32 is the fast and exact path where it fits; bf16 halves memory.
    fp32 = fp.bytes_at(4) + RAM_HEADROOM
    if hw.ram_bytes == 0 or hw.ram_bytes >= fp32:
        return Policy("cpu", "float32", "none", f"no GPU: running on {hw.cpu_count} CPU cores in float32; generation is slow", slow=True)
    return Policy(
        "cpu", "bfloat16", "none",
        f"no GPU and {hw.ram_bytes / GiB:.1f} GiB RAM < {fp32 / GiB:.1f} GiB for float32: running on CPU in bfloat16; generation is very slow",
        slow=True,
    )


def _ram_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):  # pragma: no cover - non-POSIX
        return 0


def probe_hardware() -> Hardware:
    """What this machine has. Imports torch (call from the engine, not at import)."""
    import torch

    cuda: list[tuple[str, int]] = []
    bf16 = True
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            cuda.append((str(props.name), int(props.total_memory)))
        bf16 = bool(torch.cuda.is_bf16_supported())
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return Hardware(tuple(cuda), bf16, mps, _ram_bytes(), os.cpu_count() or 1)


def _safetensors_params(path: Path) -> int:
    # The header is an 8-byte little-endian length and a JSON table of tensors:
    # counting from it needs no torch and reads a few KiB, not the weights.
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in info.get("shape", []):
            count *= int(dim)
        total += count
    return total


def model_footprint(snapshot: Path) -> Footprint:
    """Parameters per component of a diffusers snapshot (0 for unreadable files)."""
    params: dict[str, int] = {}
    for comp in COMPONENTS:
        total = 0
        for file in sorted((snapshot / comp).glob("*.safetensors")):
            try:
                total += _safetensors_params(file)
            except (OSError, ValueError, struct.error):
                continue
        params[comp] = total
    return Footprint(params)
