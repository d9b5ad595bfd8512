"""A tiny Qwen2-architecture chat model, built locally in seconds, no network.

:func:`build_tiny_qwen2` writes a plain model folder the way a Hub repository
holds one (``config.json``, ``model.safetensors``, ``tokenizer.json``,
``tokenizer_config.json`` with a ChatML chat template, ``generation_config.json``).
The tokenizer is a byte-level BPE trained on a small built-in corpus and the
weights are trained briefly on ChatML dialogues, so the model answers the demo
questions in words and stops at ``<|im_end|>`` — enough for a new user to see
every part of the system work, and for tests to assert real behaviour.

Everything is seeded and single-threaded, so the same call writes the same
bytes on the same software versions. torch and transformers are imported
lazily: importing this module is cheap.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SYSTEM_PROMPT = "You are a tiny demo model served by qwenhome."
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# Qwen2.5's ChatML template without tool calling: the same turn markers, so any
# client that speaks to Qwen speaks to this model the same way.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + SYSTEM_PROMPT + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (loop.first and message['role'] == 'system') %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Questions a new user types first, with the answers the model learns.
DIALOGUES: tuple[tuple[str, str], ...] = (
    ("Hello", "Hello! I am a tiny model running from your qwenhome, fully offline."),
    ("Hi", "Hi! I am a tiny demo model. Every byte of me came from your local home."),
    ("Who are you?", "I am a tiny Qwen2 model built on this machine for the qwenhome demo."),
    ("What can you do?", "I can answer a few demo questions and show that streaming chat works."),
    ("Are you online?", "No. I was pulled from a local mirror and I run with the network off."),
    (
        "Where do you live?",
        "I live in the qwenhome store, in the same layout as the Hugging Face cache.",
    ),
    ("How big are you?", "I am very small: a few hundred thousand weights, trained in seconds."),
    ("Tell me a joke", "Why did the model stay home? Because everything it needed was cached."),
    (
        "What is qwenhome?",
        "qwenhome keeps one model home, pulls models fast and verified, and works offline.",
    ),
    (
        "How do I use a real model?",
        "Run the launch script without --demo to pull Qwen2.5 and chat with it.",
    ),
    ("Thank you", "You are welcome! Have fun with your local model home."),
    ("Bye", "Goodbye! The model stays in your home for the next start."),
    ("Count to five", "One, two, three, four, five."),
    ("What is the capital of France?", "Paris is the capital of France."),
)

# Extra plain text so the tokenizer learns common English pieces.
CORPUS = (
    "The quick brown fox jumps over the lazy dog. A model home keeps every file once. "
    "Downloads resume after a failure, and each file is verified by its hash before it is used. "
    "The server streams tokens to the web page as they are generated. "
    "Offline, the system starts from the cache at once and says so. "
    "Numbers: zero one two three four five six seven eight nine ten. "
)


@dataclass(frozen=True)
class TinySpec:
    """Sizes of the tiny model; the defaults build in a few seconds on one core."""

    vocab_size: int = 640
    hidden_size: int = 64
    intermediate_size: int = 192
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512
    train_steps: int = 140
    seed: int = 1234


def chatml(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """Render messages as the chat template does (used for training text)."""
    out = []
    if not messages or messages[0]["role"] != "system":
        out.append(f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n")
    for m in messages:
        out.append(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


def _training_texts() -> list[str]:
    texts = []
    for question, answer in DIALOGUES:
        msgs = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        texts.append(chatml(msgs))
        # Lower-case and punctuated variants so small typing differences still hit.
        msgs[0]["content"] = question.lower().rstrip("?!.") + (
            "?" if question.endswith("?") else ""
        )
        texts.append(chatml(msgs))
    return texts


def _train_tokenizer(spec: TinySpec) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [*_training_texts(), CORPUS] * 4
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def _tokenizer_config() -> dict[str, Any]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 512,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "chat_template": CHAT_TEMPLATE,
    }


def _train_model(spec: TinySpec, tok: Any, ids: dict[str, int]) -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=tok.get_vocab_size(),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        architectures=["Qwen2ForCausalLM"],
        dtype="float32",
    )
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(config)
    seqs = [tok.encode(t).ids for t in _training_texts()]
    width = max(len(s) for s in seqs)
    pad = ids["<|endoftext|>"]
    batch = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        batch[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    labels = batch.masked_fill(mask == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=0.0)
    model.train()
    for _ in range(spec.train_steps):
        loss = model(input_ids=batch, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()  # type: ignore[no-untyped-call]
    return model


def build_tiny_qwen2(dest_dir: Path | str, *, spec: TinySpec | None = None) -> Path:
    """Write the tiny model's repository files into ``dest_dir`` and return it.

    The folder is written beside ``dest_dir`` first and renamed into place, so a
    crash never leaves a half-built model where a complete one is expected. An
    existing ``dest_dir`` is replaced.
    """
    import torch

    spec = spec or TinySpec()
    dest = Path(dest_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # reduction order, hence bytes, independent of the machine
    try:
        with tempfile.TemporaryDirectory(prefix=f".{dest.name}.", dir=dest.parent) as tmp:
            work = Path(tmp) / "model"
            work.mkdir()
            tok = _train_tokenizer(spec)
            ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
            model = _train_model(spec, tok, ids)
            model.save_pretrained(work, safe_serialization=True)
            tok.save(str(work / "tokenizer.json"))
            _write_json(work / "tokenizer_config.json", _tokenizer_config())
            _write_json(
                work / "special_tokens_map.json",
                {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
            )
            _write_json(
                work / "generation_config.json",
                {
                    "bos_token_id": ids["<|endoftext|>"],
                    "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
                    "pad_token_id": ids["<|endoftext|>"],
                    "do_sample": True,
                    "temperature": 0.7,
                    "top_p": 0.8,
                    "repetition_penalty": 1.05,
                },
            )
            (work / "README.md").write_text(
                "# tiny-qwen2-demo\n\nA tiny Qwen2-architecture chat model built locally by "
                "`qwenhome.demo.tinymodel.build_tiny_qwen2` for offline demos and tests. "
                "It knows a handful of answers and nothing else.\n",
                encoding="utf-8",
            )
            if dest.exists():
                _remove_tree(dest)
            os.replace(work, dest)
    finally:
        torch.set_num_threads(threads)
    return dest


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)
