"""The CPU engine: ``transformers`` loading a snapshot folder from the home.

The model is loaded from the snapshot path with ``local_files_only=True``, so
nothing is fetched even where ``HF_HUB_OFFLINE`` was not set. The chat
template comes from the tokenizer. Text is streamed per token through a
streamer that holds back incomplete UTF-8 sequences.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import QwenhomeError, UsageError
from .engine import Completion, Message, SamplingParams, TextSink, Usage
from .errors import ApiError
from .stops import StopMatcher

DEFAULT_CONTEXT = 4096
# Below this, dividing the logits by the temperature overflows to inf (5e-324
# made sampling fail); it is greedy decoding in all but name, as vLLM treats it.
GREEDY_BELOW = 1e-5


def quiet_progress_bars() -> None:
    """No loading bars on stderr (a process-wide switch of transformers)."""
    try:
        import transformers
    except ImportError:
        return  # the engine says what is missing when it loads
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]


class EngineLoadError(QwenhomeError):
    code = "engine-load-failed"
    default_hint = "the snapshot may be incomplete or not a causal language model; run `qwenhome verify`"


class _PieceStreamer:
    """A ``transformers`` streamer that calls ``on_text`` with each new piece of
    text (the decoded difference), skipping the prompt."""

    def __init__(self, tokenizer: Any, on_text: TextSink, lock: threading.Lock) -> None:
        self.tokenizer = tokenizer
        self.lock = lock
        self.on_text = on_text
        self.tokens: list[int] = []
        self.emitted = 0
        self._prompt_seen = False
        self.first_token_at: float | None = None

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.tokens.extend(int(t) for t in value.reshape(-1).tolist())
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        with self.lock:
            text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        # A multi-byte character split across tokens decodes to U+FFFD until complete.
        if text.endswith("\ufffd"):
            return
        if len(text) > self.emitted:
            self.on_text(text[self.emitted :])
            self.emitted = len(text)

    def end(self) -> None:
        with self.lock:
            text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if len(text) > self.emitted:
            self.on_text(text[self.emitted :])
            self.emitted = len(text)


class TransformersEngine:
    """One causal LM on one device (CPU by default). :meth:`generate` runs one
    at a time (the worker's main thread); the tokenizer is used under a lock."""

    def __init__(self, snapshot: Path, model_id: str, *, device: str = "cpu", threads: int | None = None) -> None:
        self.snapshot = Path(snapshot)
        self.model_id = model_id
        self.device = device
        self._tokenizer_lock = threading.Lock()
        started = time.perf_counter()
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise EngineLoadError(
                f"the transformers engine is not installed ({exc.name})",
                code="missing-component",
                hint="pip install 'qwenhome[engine]'",
            ) from exc
        if threads:
            torch.set_num_threads(threads)
        try:
            self.tokenizer: Any = AutoTokenizer.from_pretrained(self.snapshot, local_files_only=True)
            dtype = torch.float32 if device == "cpu" else "auto"
            self.model: Any = AutoModelForCausalLM.from_pretrained(self.snapshot, local_files_only=True, dtype=dtype)
        except (OSError, ValueError, KeyError) as exc:
            raise EngineLoadError(f"cannot load {model_id} from {self.snapshot}: {exc}", path=self.snapshot) from exc
        self._prepare(device)
        self._torch = torch
        self.load_seconds = time.perf_counter() - started
        config = self.model.config
        self._context = int(getattr(config, "max_position_embeddings", 0) or DEFAULT_CONTEXT)

    def _prepare(self, device: str) -> None:
        # Through Any: transformers' stubs type .to() and .eval() too narrowly.
        model: Any = self.model
        model.to(device)
        model.eval()

    @property
    def context_length(self) -> int:
        return self._context

    def info(self) -> dict[str, Any]:
        return {
            "engine": "transformers",
            "model": self.model_id,
            "snapshot": str(self.snapshot),
            "device": self.device,
            "context_length": self._context,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "load_seconds": round(self.load_seconds, 3),
        }

    def _prompt_ids(self, messages: Sequence[Message]) -> Any:
        try:
            with self._tokenizer_lock:
                out: Any = self.tokenizer.apply_chat_template(
                    list(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
                )
        except Exception as exc:  # jinja raises its own errors for templates that reject input
            raise UsageError(
                f"the model's chat template rejected the messages: {exc}",
                code="invalid-messages",
                hint="check the roles and their order (system, then user/assistant turns)",
            ) from exc
        return out["input_ids"]

    def _room(self, prompt_len: int, params: SamplingParams) -> int:
        """How many tokens to generate; refuses a prompt that does not fit."""
        limit = self._context
        room = limit - prompt_len
        if room < 1 or (params.strict_max_tokens and params.max_tokens > room):
            wanted = params.max_tokens if params.strict_max_tokens else None
            raise ApiError(
                400,
                f"the prompt has {prompt_len} tokens and max_tokens={wanted}; the context holds {limit}",
                code="context-length-exceeded",
                hint="shorten the conversation or lower max_tokens",
            )
        return min(params.max_tokens, room)

    def generate(
        self, messages: Sequence[Message], params: SamplingParams, sink: TextSink, cancel: threading.Event,
        started: Callable[[int], None] | None = None,
    ) -> Completion:
        """Generate; ``started`` is called with the prompt's length once it is
        known to fit, before the first piece of text."""
        torch = self._torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Cancel(StoppingCriteria):  # type: ignore[misc]
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool)

        input_ids = self._prompt_ids(messages).to(self.device)
        prompt_len = int(input_ids.shape[-1])
        max_new = self._room(prompt_len, params)
        if started is not None:
            started(prompt_len)
        matcher = StopMatcher(params.stop)

        def on_text(piece: str) -> None:
            out = matcher.feed(piece)
            if out:
                sink(out)
            if matcher.stopped:
                cancel.set()

        streamer = _PieceStreamer(self.tokenizer, on_text, self._tokenizer_lock)
        kwargs: dict[str, Any] = {"max_new_tokens": max_new}
        if params.ignore_eos:
            kwargs["min_new_tokens"] = max_new
        if params.temperature is not None and params.temperature < GREEDY_BELOW:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs["do_sample"] = True
            if params.temperature is not None:
                kwargs["temperature"] = params.temperature
            if params.top_p is not None:
                kwargs["top_p"] = params.top_p
        if params.seed is not None:
            torch.manual_seed(params.seed)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList([_Cancel()]),
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                **kwargs,
            )
        tail = matcher.flush()
        if tail:
            sink(tail)
        generated = int(output.shape[-1]) - prompt_len
        hit_eos = generated < max_new or self._ends_with_eos(output)
        if cancel.is_set() and not matcher.stopped:
            reason = "cancelled"  # the client went away; nobody reads this answer
        else:
            reason = "stop" if matcher.stopped or hit_eos else "length"
        return Completion(reason, Usage(prompt_len, generated))

    def _ends_with_eos(self, output: Any) -> bool:
        eos = self.model.generation_config.eos_token_id
        ids = eos if isinstance(eos, list) else [eos]
        return int(output[0, -1]) in [i for i in ids if i is not None]
