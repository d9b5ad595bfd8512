"""Image sizes: Qwen-Image's aspect-ratio presets and the validation of sizes.

The pipeline packs latents into 2x2 patches, so both sides must be multiples of
``vae_scale_factor * 2`` (16 for Qwen-Image, 8 for the tiny demo model). The
model card's 4:3 and 3:4 presets use 1140, which is not a multiple of 16; the
pipeline floors it to 1136 anyway, so the preset says 1136 and the image has the
size it promises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ImageSizeError

# From the Qwen-Image model card: (width, height) at the model's native scale.
QWEN_IMAGE_PRESETS: dict[str, tuple[int, int]] = {
    "1:1": (1328, 1328),
    "16:9": (1664, 928),
    "9:16": (928, 1664),
    "4:3": (1472, 1140),
    "3:4": (1140, 1472),
    "3:2": (1584, 1056),
    "2:3": (1056, 1584),
}
NATIVE_BASE = 1328  # the 1:1 side the presets are given for
NATIVE_MAX_SIDE = 2048
_SIZE_RE = re.compile(r"^\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*$")


def _snap(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


@dataclass(frozen=True)
class SizeRules:
    """What sizes a loaded model accepts, and its presets (all valid under the rules)."""

    multiple: int
    min_side: int
    max_side: int
    presets: dict[str, tuple[int, int]]
    default: str = "1:1"

    @classmethod
    def for_model(cls, multiple: int, preset_base: int = NATIVE_BASE) -> SizeRules:
        """Rules for a model needing ``multiple``, presets scaled so 1:1 is ``preset_base``."""
        scale = preset_base / NATIVE_BASE
        presets = {
            name: (_snap(w * scale, multiple), _snap(h * scale, multiple))
            for name, (w, h) in QWEN_IMAGE_PRESETS.items()
        }
        max_side = max(
            max(max(p) for p in presets.values()),
            int(NATIVE_MAX_SIDE * scale) // multiple * multiple,
        )
        return cls(multiple=multiple, min_side=2 * multiple, max_side=max_side, presets=presets)

    def nearest(self, width: int, height: int) -> tuple[int, int]:
        def clamp(v: int) -> int:
            return min(self.max_side, max(self.min_side, _snap(v, self.multiple)))

        return clamp(width), clamp(height)

    def _hint(self, width: int, height: int) -> str:
        nw, nh = self.nearest(width, height)
        listed = ", ".join(f"{k} {w}x{h}" for k, (w, h) in self.presets.items())
        return (
            f"nearest valid size: {nw}x{nh}; sides must be multiples of {self.multiple} "
            f"between {self.min_side} and {self.max_side}; presets: {listed}"
        )

    def resolve(self, size: str | None) -> tuple[int, int]:
        """``(width, height)`` from ``"WxH"``, a preset name (``"16:9"``), ``"auto"`` or None."""
        text = (size or "auto").strip()
        if text == "auto":
            return self.presets[self.default]
        if text in self.presets:
            return self.presets[text]
        match = _SIZE_RE.match(text)
        if not match:
            raise ImageSizeError(
                f"invalid size {size!r}",
                hint=f"give WIDTHxHEIGHT or a preset name; {self._hint(self.presets[self.default][0], self.presets[self.default][1])}",
                size=size,
            )
        return self.check(int(match.group(1)), int(match.group(2)))

    def check(self, width: int, height: int) -> tuple[int, int]:
        bad = [
            f"{name} {v} is not a multiple of {self.multiple}"
            for name, v in (("width", width), ("height", height))
            if v % self.multiple
        ]
        bad += [
            f"{name} {v} is outside {self.min_side}..{self.max_side}"
            for name, v in (("width", width), ("height", height))
            if not self.min_side <= v <= self.max_side
        ]
        if bad:
            raise ImageSizeError(
                f"invalid image size {width}x{height}: " + "; ".join(bad),
                hint=self._hint(width, height),
                size=f"{width}x{height}",
            )
        return width, height

    def to_dict(self) -> dict[str, object]:
        return {
            "multiple": self.multiple,
            "min_side": self.min_side,
            "max_side": self.max_side,
            "default": self.default,
            "presets": {k: {"width": w, "height": h, "size": f"{w}x{h}"} for k, (w, h) in self.presets.items()},
        }
