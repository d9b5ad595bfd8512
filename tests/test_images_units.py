"""Sizes, presets, device policy, uploads and the result store: no model needed."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from qwenhome.images.errors import ImageSizeError, InvalidImageError, JobNotFoundError
from qwenhome.images.policy import Footprint, GiB, Hardware, decide_policy, model_footprint
from qwenhome.images.results import ResultStore
from qwenhome.images.sizes import QWEN_IMAGE_PRESETS, SizeRules
from qwenhome.images.uploads import read_upload
from tests.images_support.model import png_bomb

# Qwen-Image: a 20B MMDiT, a 7B-class text encoder and a small VAE.
QWEN_IMAGE = Footprint({"transformer": 20_430_000_000, "text_encoder": 8_290_000_000, "vae": 127_000_000})


def _png(size: tuple[int, int] = (40, 24), mode: str = "RGB", color: object = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")  # type: ignore[arg-type]
    return buf.getvalue()


def test_qwen_image_presets_are_the_model_card_sizes_on_the_16_pixel_grid() -> None:
    rules = SizeRules.for_model(16)
    assert set(rules.presets) == {"1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3"}
    assert rules.presets["1:1"] == (1328, 1328)
    assert rules.presets["16:9"] == (1664, 928)
    assert rules.presets["3:2"] == (1584, 1056)
    # The card's 1140 is off the grid; the pipeline floors it to 1136, and so does the preset.
    assert QWEN_IMAGE_PRESETS["4:3"] == (1472, 1140)
    assert rules.presets["4:3"] == (1472, 1136) and rules.presets["3:4"] == (1136, 1472)
    for w, h in rules.presets.values():
        assert rules.check(w, h) == (w, h)


def test_scaled_presets_stay_valid_and_keep_their_aspect() -> None:
    rules = SizeRules.for_model(8, preset_base=128)
    for name, (w, h) in rules.presets.items():
        assert rules.check(w, h) == (w, h)
        a, b = (int(x) for x in name.split(":"))
        assert abs(w / h - a / b) < 0.12, name
    assert rules.resolve("16:9") == rules.presets["16:9"]
    assert rules.resolve(None) == rules.resolve("auto") == (128, 128)


@pytest.mark.parametrize("size", ["1000x1001", "1330x1328", "8x8", "4096x4096"])
def test_invalid_size_names_the_nearest_valid_size_and_the_presets(size: str) -> None:
    rules = SizeRules.for_model(16)
    with pytest.raises(ImageSizeError) as info:
        rules.resolve(size)
    err = info.value
    assert err.code == "invalid-image-size"
    nw, nh = rules.nearest(*(int(v) for v in size.split("x")))
    assert f"nearest valid size: {nw}x{nh}" in err.hint
    assert nw % 16 == 0 and nh % 16 == 0 and rules.check(nw, nh)
    assert "16:9 1664x928" in err.hint


def test_unparseable_size_is_rejected_with_the_same_code() -> None:
    with pytest.raises(ImageSizeError) as info:
        SizeRules.for_model(16).resolve("big")
    assert info.value.code == "invalid-image-size" and "WIDTHxHEIGHT" in info.value.hint


def test_policy_puts_the_whole_model_on_a_gpu_with_room() -> None:
    p = decide_policy(Hardware(cuda_devices=(("A100", 80 * GiB),)), QWEN_IMAGE)
    assert (p.device, p.dtype, p.offload) == ("cuda", "bfloat16", "none")


def test_policy_offloads_by_model_on_a_48_gb_gpu_and_by_layer_on_a_16_gb_one() -> None:
    # The bf16 transformer alone is ~38 GiB: it fits 48 GiB (model offload), not 16 or 24.
    p48 = decide_policy(Hardware(cuda_devices=(("RTX A6000", 48 * GiB),)), QWEN_IMAGE)
    p16 = decide_policy(Hardware(cuda_devices=(("RTX 4080", 16 * GiB),), cuda_bf16=False), QWEN_IMAGE)
    assert (p48.device, p48.dtype, p48.offload, p48.slow) == ("cuda", "bfloat16", "model", False)
    assert (p16.device, p16.dtype, p16.offload, p16.slow) == ("cuda", "float16", "sequential", True)
    assert "one component on the GPU" in p48.reason and "sequential" in p16.reason


def test_policy_on_cpu_only_runs_and_says_it_is_slow() -> None:
    big_ram = decide_policy(Hardware(ram_bytes=256 * GiB, cpu_count=32), QWEN_IMAGE)
    small_ram = decide_policy(Hardware(ram_bytes=64 * GiB, cpu_count=8), QWEN_IMAGE)
    assert (big_ram.device, big_ram.dtype, big_ram.slow) == ("cpu", "float32", True)
    assert (small_ram.device, small_ram.dtype) == ("cpu", "bfloat16")
    assert "slow" in big_ram.reason and "slow" in small_ram.reason


def test_footprint_counts_parameters_from_safetensors_headers(tmp_path: Path) -> None:
    header = {"a": {"dtype": "BF16", "shape": [3, 4], "data_offsets": [0, 24]},
              "b": {"dtype": "BF16", "shape": [5], "data_offsets": [24, 34]}, "__metadata__": {}}
    raw = json.dumps(header).encode()
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "x.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 34)
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "broken.safetensors").write_bytes(b"\xff" * 4)
    fp = model_footprint(tmp_path)
    assert fp.params == {"transformer": 17, "text_encoder": 0, "vae": 0}


def test_upload_must_be_a_real_image() -> None:
    for bad in (b"", b"not an image at all", _png()[:60]):
        with pytest.raises(InvalidImageError) as info:
            read_upload(bad, "image")
        assert info.value.code == "invalid-image"
    ok = read_upload(_png((40, 24)), "image")
    assert (ok.width, ok.height) == (40, 24)
    assert Image.open(io.BytesIO(ok.png)).mode == "RGB"


def test_upload_size_is_checked_from_the_header_before_decoding(tmp_path: Path) -> None:
    for data, size in ((png_bomb(4097), "4097x4097"), (_png((9000, 1), "L", 0), "9000x1")):
        with pytest.raises(InvalidImageError) as info:
            read_upload(data, "image")
        assert info.value.code == "image-too-large" and size in info.value.message
    with pytest.raises(InvalidImageError) as info:  # past 8192x8192 Pillow itself refuses at open
        read_upload(png_bomb(8200), "image")
    assert info.value.code == "image-too-large"
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    with pytest.raises(InvalidImageError) as info:
        read_upload(gif.getvalue(), "image")
    assert info.value.code == "invalid-image"
    spooled = tmp_path / "image.upload"
    spooled.write_bytes(_png((4096, 4096), "L", 0))  # at the limit: decoded, from the file
    assert (read_upload(spooled, "image").width, read_upload(spooled, "image").height) == (4096, 4096)


def test_mask_with_transparency_follows_openai_transparent_means_repaint() -> None:
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 255))
    img.putpixel((1, 1), (0, 0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    mask = Image.open(io.BytesIO(read_upload(buf.getvalue(), "mask", mask=True).png))
    assert mask.mode == "L" and mask.getpixel((1, 1)) == 255 and mask.getpixel((0, 0)) == 0
    plain = Image.open(io.BytesIO(read_upload(_png((8, 8), "L", 255), "mask", mask=True).png))
    assert plain.getpixel((3, 3)) == 255


def test_result_store_serves_only_its_own_names(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "images")
    job = "ab" * 16
    names = store.save(job, [_png(), _png()], {"prompt": "p", "finished": 1.0}, {"input.png": _png()})
    assert names == ["0.png", "1.png"]
    assert store.file(job, "1.png").read_bytes() == _png()
    assert store.params(job)["prompt"] == "p" and store.list()[0]["job"] == job
    for job_id, name in ((job, "params.json"), (job, "../x.png"), ("../" + job, "0.png"), (job, "7.png")):
        with pytest.raises(JobNotFoundError):
            store.file(job_id, name)
    assert not [p for p in (tmp_path / "images").iterdir() if p.name.startswith(".tmp")]


def test_importing_the_package_loads_no_engine() -> None:
    code = (
        "import sys, qwenhome.images\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'fastapi', 'PIL') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
