"""Reconstruction answers (v1, v2), the token answer and recipes: round trips and hostile JSON."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwenhome.errors import ProtocolError
from qwenhome.xet.errors import XetAnswerError
from qwenhome.xet.recipe import FileRecipe
from qwenhome.xet.reconstruction import (
    ReconstructionV1,
    ReconstructionV2,
    parse_reconstruction,
)
from qwenhome.xet.token import XetToken

A = "a1b2c3d4e5f6789012345678901234567890abcdef1234567890abcdef123456"
B = "fedcba0987654321098765432109876543210fedcba09876543210987654321a"
URL = "https://transfer.example/xorb/default/{}?X-Xet-Signed-Range=bytes%3D0-131071&Expires=1"

# The specification's multi-xorb example (download-protocol), with its 62-digit hash made 64.
V2: dict[str, Any] = {
    "offset_into_first_range": 0,
    "terms": [
        {"hash": A, "unpacked_length": 263873, "range": {"start": 1, "end": 4}},
        {"hash": B, "unpacked_length": 143890, "range": {"start": 0, "end": 3}},
        {"hash": A, "unpacked_length": 3063572, "range": {"start": 3, "end": 43}},
    ],
    "xorbs": {
        A: [{"url": URL.format(A), "ranges": [{"chunks": {"start": 1, "end": 43},
                                               "bytes": {"start": 57980, "end": 1433008}}]}],
        B: [{"url": URL.format(B), "ranges": [{"chunks": {"start": 0, "end": 3},
                                               "bytes": {"start": 0, "end": 65670}}]}],
    },
}
V1: dict[str, Any] = {
    "offset_into_first_range": 100,
    "terms": V2["terms"],
    "fetch_info": {
        A: [{"range": {"start": 1, "end": 43}, "url": URL.format(A), "url_range": {"start": 57980, "end": 1433008}}],
        B: [{"range": {"start": 0, "end": 3}, "url": URL.format(B), "url_range": {"start": 0, "end": 65670}}],
    },
}
TOKEN = {"accessToken": "xet_secret", "exp": 1848535668, "casUrl": "https://cas-server.example"}


def test_v2_round_trips_and_keeps_the_range_conventions() -> None:
    answer = ReconstructionV2.from_json(json.dumps(V2).encode())
    assert json.loads(answer.dumps()) == V2
    assert ReconstructionV2.from_json(answer.to_json()) == answer
    fetch = answer.xorbs[A][0]
    assert fetch.range_header() == "bytes=57980-1433008"  # end-inclusive, as in HTTP
    assert len(fetch.ranges[0].chunks) == 42  # end-exclusive
    assert fetch.ranges[0].bytes.length == 1433008 - 57980 + 1
    assert answer.length == 263873 + 143890 + 3063572


def test_v1_round_trips_and_converts_to_v2() -> None:
    answer = ReconstructionV1.from_json(V1)
    assert ReconstructionV1.from_json(answer.dumps()) == answer
    as_v2 = parse_reconstruction(json.dumps(V1))
    assert as_v2 == answer.to_v2()
    assert as_v2.xorbs[B][0].ranges[0].bytes.end == 65670 and as_v2.offset_into_first_range == 100


def test_token_round_trips_and_keeps_its_secret_out_of_reprs() -> None:
    token = XetToken.from_json(json.dumps(TOKEN))
    assert token.to_json() == TOKEN and XetToken.from_json(token.dumps()) == token
    assert "xet_secret" not in repr(token)
    assert XetToken.from_headers(token.headers()) == token
    assert XetToken.from_headers({"x-xet-access-token": "t"}) is None
    assert token.expires_within(1848535668 - 10) and not token.expires_within(1848535668 - 100)
    assert XetToken.from_json({**TOKEN, "exp": 1848535668.7}).exp == 1848535668


def _mutate(base: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    node: Any = out
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


_DELETE = object()

HOSTILE_V2 = [
    ([ "terms"], _DELETE), (["xorbs"], _DELETE), (["offset_into_first_range"], -1),
    (["offset_into_first_range"], 263873),  # not inside the first term
    (["offset_into_first_range"], True), (["offset_into_first_range"], 1.5), (["offset_into_first_range"], "0"),
    (["terms"], {}), (["terms", 0], []), (["terms", 0, "hash"], "xyz"), (["terms", 0, "hash"], A[:-1]),
    (["terms", 0, "range", "end"], 1),  # empty chunk range
    (["terms", 0, "range", "end"], 0),  # end before start
    (["terms", 0, "range", "start"], 2**40), (["terms", 0, "range"], None),
    (["terms", 0, "unpacked_length"], 0), (["terms", 0, "unpacked_length"], 3 * 131072 + 1),
    (["terms", 1, "range", "end"], 4),  # not covered by B's ranges
    (["xorbs", A], []), (["xorbs", A], {}), (["xorbs", A, 0, "url"], "file:///etc/passwd"),
    (["xorbs", A, 0, "url"], "/relative"), (["xorbs", A, 0, "url"], "http://x:99999/"),
    (["xorbs", A, 0, "url"], "http://ok/\r\nInjected: 1"), (["xorbs", A, 0, "url"], "h" * 70_000),
    (["xorbs", A, 0, "ranges"], []), (["xorbs", A, 0, "ranges", 0, "bytes", "end"], 57979),
    (["xorbs", A, 0, "ranges", 0, "bytes", "end"], 58000),  # too few bytes for 42 chunks
    (["xorbs", A, 0, "ranges", 0, "bytes"], {"start": -5, "end": 10}),
    (["xorbs", A, 0, "ranges", 0, "chunks"], {"start": 1}),
    (["xorbs", "not-a-hash"], []),
]


@pytest.mark.parametrize(("path", "value"), HOSTILE_V2, ids=[str(i) for i in range(len(HOSTILE_V2))])
def test_hostile_v2_fields_give_a_typed_error_naming_the_field(path: list[Any], value: Any) -> None:
    with pytest.raises(XetAnswerError) as caught:
        ReconstructionV2.from_json(_mutate(V2, path, value))
    assert caught.value.code == "xet-bad-reconstruction" and isinstance(caught.value, ProtocolError)
    assert caught.value.one_line().startswith("error[xet-bad-reconstruction]: invalid reconstruction")


def test_unordered_or_overlapping_ranges_are_refused() -> None:
    two = [{"chunks": {"start": 10, "end": 43}, "bytes": {"start": 600000, "end": 1433008}},
           {"chunks": {"start": 1, "end": 10}, "bytes": {"start": 57980, "end": 599999}}]
    with pytest.raises(XetAnswerError):
        ReconstructionV2.from_json(_mutate(V2, ["xorbs", A, 0, "ranges"], two))
    ReconstructionV2.from_json(_mutate(V2, ["xorbs", A, 0, "ranges"], two[::-1]))  # ascending: fine


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b"[]", b"null", b'"x"', b"[" * 100_000,
                                 json.dumps({"terms": [], "fetch_info": {}}).encode()])
def test_garbage_bodies_give_a_typed_error(raw: bytes) -> None:
    for parse in (ReconstructionV2.from_json, ReconstructionV1.from_json, parse_reconstruction):
        with pytest.raises(XetAnswerError):
            parse(raw)


@pytest.mark.parametrize("bad", [{}, {**TOKEN, "accessToken": ""}, {**TOKEN, "exp": "soon"},
                                 {**TOKEN, "exp": -1}, {**TOKEN, "exp": float("nan")},
                                 {**TOKEN, "casUrl": "ftp://x"}, {**TOKEN, "accessToken": 5}, [TOKEN]])
def test_hostile_token_answers_give_a_typed_error(bad: Any) -> None:
    with pytest.raises(XetAnswerError) as caught:
        XetToken.from_json(bad)
    assert caught.value.code == "xet-bad-token"
    with pytest.raises(XetAnswerError):
        XetToken.from_headers({"X-Xet-Access-Token": "t", "X-Xet-Token-Expiration": "²",
                               "X-Xet-Cas-Url": "https://cas"})


def _json_values() -> st.SearchStrategy[Any]:
    leaves = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=70)
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=6)


def _paths(node: Any, prefix: list[Any]) -> list[list[Any]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, val in node.items():
            out += _paths(val, [*prefix, k])
    elif isinstance(node, list):
        for i, val in enumerate(node):
            out += _paths(val, [*prefix, i])
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_mutation_of_an_answer_parses_or_gives_a_typed_error(data: st.DataObject) -> None:
    base = data.draw(st.sampled_from([V2, V1]))
    path = data.draw(st.sampled_from(_paths(base, [])))
    mutated = _mutate(base, path, data.draw(_json_values() | st.just(_DELETE)))
    try:
        parse_reconstruction(mutated)
    except XetAnswerError:
        pass


def test_recipe_round_trips_and_knows_term_offsets() -> None:
    answer = ReconstructionV2.from_json(V2)
    recipe = FileRecipe.from_reconstruction(B, answer)
    assert recipe.size == answer.length
    assert recipe.term_offsets() == [0, 263873, 263873 + 143890, answer.length]
    assert recipe.term_at(263873) == 1 and recipe.term_at(answer.length - 1) == 2
    assert FileRecipe.from_json(recipe.dumps()) == recipe
    with pytest.raises(XetAnswerError) as caught:
        FileRecipe.from_json({**recipe.to_json(), "size": 5})
    assert caught.value.code == "xet-bad-recipe"
    with pytest.raises(XetAnswerError):
        FileRecipe.from_json({**recipe.to_json(), "chunk_lengths": [1, 2, 3]})
