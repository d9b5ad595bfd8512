"""What the API asks of an inference engine, independent of torch or vLLM.

A :class:`LocalEngine` generates on the event loop's behalf and yields text
pieces as they come (the transformers engine in its worker process;
:class:`.workers.chat.RemoteChatEngine` stands for it in the API); a :class:`ProxyEngine` forwards
OpenAI-compatible requests to another server (vLLM) that does its own
scheduling.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class SamplingParams:
    """OpenAI's sampling fields; ``None`` means the model's own default."""

    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # vLLM's extension: always generate max_tokens (benchmarks)
    # True: a prompt that leaves less room than max_tokens is refused
    # (``context-length-exceeded``); False: max_tokens is lowered to the room left.
    strict_max_tokens: bool = False


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


@dataclass
class Completion:
    """The outcome of one generation (the text went to the sink piece by piece)."""

    finish_reason: str  # "stop", "length", or "cancelled" (the client went away)
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class Started:
    """The engine accepted the prompt (it fits the context) and generates now."""

    prompt_tokens: int


Message = dict[str, str]
TextSink = Callable[[str], None]


@runtime_checkable
class LocalEngine(Protocol):
    @property
    def model_id(self) -> str: ...

    @property
    def context_length(self) -> int: ...

    def info(self) -> dict[str, Any]: ...

    def generate(self, messages: Sequence[Message], params: SamplingParams
                 ) -> AsyncGenerator[Started | str | Completion, None]:
        """Count the prompt's tokens and refuse one that does not fit the
        context (raising before anything is yielded); else yield
        :class:`Started`, each new piece of text, then the :class:`Completion`
        (done or ``max_tokens``). Closing the iterator early cancels it."""
        ...


@runtime_checkable
class ProxyEngine(Protocol):
    @property
    def model_id(self) -> str: ...

    @property
    def base_url(self) -> str: ...

    def info(self) -> dict[str, Any]: ...
