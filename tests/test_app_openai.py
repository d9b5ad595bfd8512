"""The OpenAI-compatible API over the tiny model, through the ``openai`` package
and raw HTTP: streaming and not, sampling fields, queueing, bad requests."""

from __future__ import annotations

import itertools
import threading
import time

import httpx
import openai
import pytest

from qwenhome.app.scheduler import Scheduler
from qwenhome.demo import DEMO_REPO
from tests.app_support.shared import SharedServer, shared_server

HELLO_ANSWER = "Hello! I am a tiny model running from your qwenhome, fully offline."


def last_seq(scheduler: Scheduler) -> int:
    """Arrival number of the last job served (the history is bounded)."""
    return max((job[0] for job in scheduler.history), default=0)


@pytest.fixture(scope="module")
def server() -> SharedServer:
    return shared_server()


@pytest.fixture
def client(server: SharedServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_list_names_the_served_model(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == [DEMO_REPO]


def test_non_streaming_chat_returns_the_trained_answer_with_usage(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=DEMO_REPO, messages=[{"role": "user", "content": "Hello"}], temperature=0
    )
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == HELLO_ANSWER
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streaming_chat_arrives_in_several_chunks_and_joins_to_the_answer(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=DEMO_REPO,
        messages=[{"role": "user", "content": "Hello"}],
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    finish = None
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert len(pieces) >= 5  # token by token, not one block
    assert "".join(pieces) == HELLO_ANSWER
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens >= len(pieces)


def test_max_tokens_cuts_the_answer_with_finish_reason_length(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=DEMO_REPO, messages=[{"role": "user", "content": "Hello"}], temperature=0, max_tokens=3
    )
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 3
    assert HELLO_ANSWER.startswith(r.choices[0].message.content or "x")


def test_stop_sequence_ends_the_answer_before_it(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=DEMO_REPO, messages=[{"role": "user", "content": "Hello"}], temperature=0, stop=["tiny"]
    )
    assert r.choices[0].message.content == "Hello! I am a "
    assert r.choices[0].finish_reason == "stop"


def test_a_vanishing_temperature_is_greedy_not_a_failure(client: openai.OpenAI) -> None:
    # 5e-324 divided the logits into infinities: sampling failed with a 500.
    for temperature in (5e-324, 1e-9):
        r = client.chat.completions.create(
            model=DEMO_REPO, messages=[{"role": "user", "content": "Hello"}], temperature=temperature, max_tokens=64)
        assert r.choices[0].message.content == HELLO_ANSWER


def test_seeds_across_the_int64_range_are_taken(client: openai.OpenAI) -> None:
    for seed in (0, -(2**63), 2**63 - 1):
        r = client.chat.completions.create(model=DEMO_REPO, messages=[{"role": "user", "content": "Hello"}],
                                           temperature=1.0, seed=seed, max_tokens=4)
        assert r.usage is not None and r.usage.completion_tokens >= 1


def test_same_seed_gives_the_same_sampled_answer(client: openai.OpenAI) -> None:
    def ask(seed: int) -> str:
        r = client.chat.completions.create(
            model=DEMO_REPO,
            messages=[{"role": "user", "content": "What is your favourite colour?"}],
            temperature=1.5,
            top_p=1.0,
            seed=seed,
            max_tokens=24,
        )
        return r.choices[0].message.content or ""

    first = ask(7)
    assert ask(7) == first
    assert any(ask(s) != first for s in (8, 9, 10))  # sampling is really on


def test_health_answers_while_a_generation_runs(server: SharedServer) -> None:
    body = {
        "model": DEMO_REPO,
        "messages": [{"role": "user", "content": "Tell me a story"}],
        "max_tokens": 400,
        "temperature": 1.0,
        "seed": 1,
        "ignore_eos": True,  # long enough to be caught running
    }
    done = threading.Event()

    def generate() -> None:
        httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)
        done.set()

    t = threading.Thread(target=generate)
    t.start()
    deadline = time.monotonic() + 10
    while not server.state.scheduler or not server.state.scheduler.busy:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    answered_while_busy = 0
    for _ in range(5):
        assert httpx.get(f"{server.url}/health", timeout=5).json()["status"] == "ready"
        answered_while_busy += server.state.scheduler.busy
    t.join(120)
    assert done.is_set()
    # Not queued behind the generation: answered while it was still running.
    assert answered_while_busy >= 4


def test_concurrent_requests_run_one_at_a_time_in_arrival_order(server: SharedServer) -> None:
    scheduler = server.state.scheduler
    assert scheduler is not None
    answers: dict[int, str] = {}

    def ask(i: int) -> None:
        r = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": DEMO_REPO, "messages": [{"role": "user", "content": "Hello"}], "temperature": 0},
            timeout=120,
        )
        answers[i] = r.json()["choices"][0]["message"]["content"]

    # A job of an earlier test (a cancelled stream) may still be finishing:
    # start from an idle scheduler, so its record is not counted as ours.
    deadline = time.monotonic() + 30
    while (scheduler.busy or scheduler.queued) and time.monotonic() < deadline:
        time.sleep(0.01)
    before = last_seq(scheduler)
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert sorted(answers) == [0, 1, 2, 3]
    assert all(text == HELLO_ANSWER for text in answers.values())
    # A job is recorded a moment after its answer went out: wait for the record.
    deadline = time.monotonic() + 5
    while len([job for job in scheduler.history if job[0] > before]) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    served = [job for job in scheduler.history if job[0] > before]
    assert len(served) == 4
    # Served in the order they arrived, each after the previous one ended.
    assert [job[0] for job in served] == sorted(job[0] for job in served)
    assert {job[3] for job in served} == {"done"}
    assert all(prev[2] <= cur[1] for prev, cur in itertools.pairwise(served))


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        (b"{not json", 400, "invalid-json"),
        (b'{"model": "Nobody/Nothing", "messages": [{"role": "user", "content": "hi"}]}', 404, "model-not-found"),
        (
            b'{"model": "qwenhome/tiny-qwen2-demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000000000}',
            400,
            "max-tokens-too-large",
        ),
        (
            b'{"model": "qwenhome/tiny-qwen2-demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 500}',
            400,
            "context-length-exceeded",
        ),
        # Streamed: refused before any header, though the worker counts the
        # prompt in the same message that starts the generation.
        (
            b'{"model": "qwenhome/tiny-qwen2-demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 500, "stream": true}',
            400,
            "context-length-exceeded",
        ),
        # No max_tokens, and a prompt longer than the whole context.
        (
            b'{"model": "qwenhome/tiny-qwen2-demo", "messages": [{"role": "user", "content": "' + b"hi " * 700 + b'"}], "stream": true}',
            400,
            "context-length-exceeded",
        ),
        (b'{"model": "qwenhome/tiny-qwen2-demo", "messages": []}', 400, "invalid-request"),
        (
            b'{"model": "qwenhome/tiny-qwen2-demo", "messages": [{"role": "user", "content": "hi"}], "temperature": 7}',
            400,
            "invalid-request",
        ),
        (b'{"model": "qwenhome/tiny-qwen2-demo", "messages": [{"role": "wizard", "content": "hi"}]}', 400, "invalid-request"),
        (b"[]", 400, "invalid-request"),
        # Out of the int64 range OpenAI and vLLM take (torch refused it: a 500 generation-failed).
        (b'{"model": "qwenhome/tiny-qwen2-demo", "messages": [{"role": "user", "content": "hi"}], "seed": 18446744073709551616}',
         400, "invalid-request"),
        (b'{"model": "qwenhome/tiny-qwen2-demo", "messages": [{"role": "user", "content": "hi"}], "seed": -9223372036854775809}',
         400, "invalid-request"),
        # JSON may escape a lone surrogate: not text, for any tokenizer or answer.
        (b'{"model": "qwenhome/tiny-qwen2-demo", "messages": [{"role": "user", "content": "hi \\ud800"}]}',
         400, "invalid-request"),
        (b'{"model": "qwenhome/tiny-qwen2-demo", "messages": [{"role": "user", "content": "hi"}], "stop": ["\\udc00"]}',
         400, "invalid-request"),
        (b'{"model": "qwenhome/tiny-qwen2-demo", "messages": [{"role": "user", "content": "hi"}], "top_p": NaN}',
         400, "invalid-request"),
    ],
)
def test_bad_requests_get_clear_4xx_errors_and_the_server_stays_healthy(
    server: SharedServer, payload: bytes, status: int, code: str
) -> None:
    r = httpx.post(
        f"{server.url}/v1/chat/completions", content=payload, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert err["message"]
    assert httpx.get(f"{server.url}/health", timeout=5).json()["status"] == "ready"


def test_openai_client_raises_its_not_found_error_for_an_unknown_model(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="Nobody/Nothing", messages=[{"role": "user", "content": "hi"}])
    assert "not served here" in str(info.value)


def test_unknown_route_is_a_json_404(server: SharedServer) -> None:
    r = httpx.get(f"{server.url}/v1/nothing-here", timeout=5)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not-found"


def test_a_client_that_goes_away_cancels_its_generation(server: SharedServer) -> None:
    scheduler = server.state.scheduler
    assert scheduler is not None
    before = last_seq(scheduler)
    body = {"model": DEMO_REPO, "messages": [{"role": "user", "content": "Hello"}], "stream": True,
            "max_tokens": 480, "ignore_eos": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as r:
        chunks = 0
        for line in r.iter_lines():
            chunks += line.startswith("data: ")
            if chunks >= 4:
                break  # leaving the block closes the connection mid-stream
    deadline = time.monotonic() + 20
    while last_seq(scheduler) == before:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert scheduler.history[-1][3] == "cancelled"
    # The job ended early: the next request is served at once, in full. It asks
    # for exactly 40 tokens from a model told not to stop: it gets 40.
    r2 = httpx.post(f"{server.url}/v1/chat/completions", timeout=60, json={
        "model": DEMO_REPO, "messages": [{"role": "user", "content": "Hello"}], "temperature": 0,
        "max_tokens": 40, "ignore_eos": True})
    assert r2.json()["choices"][0]["message"]["content"].startswith(HELLO_ANSWER)
    assert r2.json()["usage"]["completion_tokens"] == 40
    assert r2.json()["choices"][0]["finish_reason"] == "length"
