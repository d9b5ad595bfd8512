"""A tiny QwenImage pipeline built locally, for tests and ``--demo``.

Same component classes as Qwen-Image (MMDiT transformer, Qwen-Image VAE,
Qwen2.5-VL text encoder, Qwen2 BPE tokenizer, flow-matching scheduler), with
configurations small enough to build in seconds and denoise a 64x64 image on
one CPU core in well under a second. Nothing is downloaded: the tokenizer is
trained here on a few sentences. The weights are random, so images are noise,
but every code path (loading from a snapshot, steps, callbacks, VAE decode,
img2img, inpaint) is the real one.

The components follow diffusers' own QwenImage pipeline tests
(``get_dummy_components``), which proves these configurations are valid.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

# The real pipeline drops the first 34 tokens of its prompt template (the
# system prefix). The tokenizer below is trained on the template's words so
# that the prefix is 34 tokens here too and the prompt itself reaches the model.
_TEMPLATE_TEXT = (
    "system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
    "spatial relationships of the objects and background:\nuser\n\nassistant\n"
)
_EXTRA_TEXT = (
    "a red fox in the snow, a blue cat on a green sofa, mountains at sunset, "
    "photo of a lighthouse by the sea, blurry, low quality, watermark"
)
SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>")
# Marker file in the snapshot: tells qwenhome the preset scale this model is
# meant for (the tiny model would need gigabytes at 1328x1328).
HINTS_FILE = "qwenhome.json"
TINY_PRESET_BASE = 128
TINY_REPO_ID = "qwenhome/tiny-qwen-image-demo"


def _build_tokenizer() -> Any:
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    qwen2_tokenizer: Any = importlib.import_module("transformers").Qwen2Tokenizer

    bpe = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix=""))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        min_frequency=1,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([_TEMPLATE_TEXT] * 50 + [_EXTRA_TEXT] * 10, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return qwen2_tokenizer(
        vocab=model["vocab"], merges=merges, additional_special_tokens=list(SPECIAL_TOKENS)
    )


def build_tiny_components(seed: int = 0) -> dict[str, Any]:
    """The five components of a tiny QwenImage pipeline, seeded (same seed, same weights)."""
    import torch

    # Typed as Any: these libraries' partial annotations add nothing here.
    diffusers: Any = importlib.import_module("diffusers")
    transformers: Any = importlib.import_module("transformers")
    tokenizer = _build_tokenizer()
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    torch.manual_seed(seed)
    transformer = diffusers.QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    torch.manual_seed(seed)
    z_dim = 4
    vae = diffusers.AutoencoderKLQwenImage(
        base_dim=z_dim * 6,
        z_dim=z_dim,
        dim_mult=[1, 2, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    )
    torch.manual_seed(seed)
    config = transformers.Qwen2_5_VLConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            "vocab_size": len(tokenizer),
            "bos_token_id": None,
            "eos_token_id": 0,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": 16,
        },
        hidden_size=16,
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=0,
        vision_start_token_id=ids[2],
        vision_end_token_id=ids[3],
        vision_token_id=ids[4],
        image_token_id=ids[4],
    )
    text_encoder = transformers.Qwen2_5_VLForConditionalGeneration(config).eval()
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": diffusers.FlowMatchEulerDiscreteScheduler(),
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
    }


def build_tiny_qwenimage(dest_dir: Path, seed: int = 0) -> Path:
    """Save a tiny QwenImage pipeline to ``dest_dir`` and return it.

    ``QwenImagePipeline.from_pretrained(dest_dir)`` loads it, and so does
    qwenhome's image engine; the folder can be published as a model repository
    (``--demo`` publishes it as ``qwenhome/tiny-qwen-image-demo``).
    """
    from .engine import quiet_progress_bars

    diffusers: Any = importlib.import_module("diffusers")
    quiet_progress_bars()
    dest_dir = Path(dest_dir)
    pipe = diffusers.QwenImagePipeline(**build_tiny_components(seed))
    pipe.save_pretrained(dest_dir, safe_serialization=True)
    hints = {"images": {"preset_base": TINY_PRESET_BASE, "note": "tiny random model for tests and --demo"}}
    (dest_dir / HINTS_FILE).write_text(json.dumps(hints, indent=2) + "\n", encoding="utf-8")
    return dest_dir
