"""Team-draft interleaving (rollguard.serving.interleaving): the published vectors, an
independent implementation of the paper's algorithm, and the properties that make the
comparison fair: unbiased coins, no team favoured between equal rankers, and the Router's
list equal to the one the worker credits."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollguard.serving import Route
from rollguard.serving.interleaving import coins, credit, preference, team_draft

VECTORS = json.loads((Path(__file__).parent / "data" / "interleaving_vectors.json")
                     .read_text(encoding="utf-8"))["vectors"]


def reference_team_draft(a: list[str], b: list[str], experiment: str, request_id: str,
                         length: int | None = None) -> list[tuple[str, str]]:
    """Radlinski, Kurup & Joachims (2008), Algorithm "Team-Draft Interleaving", as printed,
    with RandBit() read from the rule's coins (a separate reading of the bits)."""
    bits = []
    for block in range(4):
        digest = hashlib.sha256((experiment + "/" + request_id + "/" + str(block))
                                .encode("utf-8")).digest()
        bits += [int(b) for b in "".join(format(byte, "08b") for byte in digest)]
    rand_bit = iter(bits)
    k = max(len(a), len(b)) if length is None else length
    interleaved: list[str] = []
    team_a: set[str] = set()
    team_b: set[str] = set()
    while (any(x not in interleaved for x in a) and any(x not in interleaved for x in b)
           and len(interleaved) < k):
        if len(team_a) < len(team_b) or (len(team_a) == len(team_b) and next(rand_bit) == 0):
            pick = next(x for x in a if x not in interleaved)
            team_a.add(pick)
        else:
            pick = next(x for x in b if x not in interleaved)
            team_b.add(pick)
        interleaved.append(pick)
    return [(x, "champion" if x in team_a else "candidate") for x in interleaved]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["note"][:40] for v in VECTORS])
def test_published_vectors_hold(vector):
    args = (vector["champion"], vector["candidate"], vector["experiment"],
            vector["request_id"], vector.get("length"))
    expected = [tuple(pair) for pair in vector["shown"]]
    assert "".join(str(c) for c in itertools.islice(coins(*args[2:4]), 32)) == vector["coins"]
    assert team_draft(*args) == expected
    assert reference_team_draft(*args) == expected


def test_the_vectors_cover_a_second_block_of_coins():
    long = next(v for v in VECTORS if "block 1" in v["note"])
    # a coin per round of two picks: more than 512 picks need coins past the first 256
    assert len(long["shown"]) > 2 * 256


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from("abcdefghij"), max_size=8, unique=True),
       st.lists(st.sampled_from("abcdefghij"), max_size=8, unique=True),
       st.text(min_size=1, max_size=12), st.none() | st.integers(0, 12))
def test_it_is_the_papers_algorithm(a, b, request_id, length):
    assert team_draft(a, b, "e", request_id, length) == \
        reference_team_draft(a, b, "e", request_id, length)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("abcdefghij"), min_size=1, max_size=8, unique=True),
       st.lists(st.sampled_from("abcdefghij"), min_size=1, max_size=8, unique=True),
       st.text(min_size=1, max_size=12))
def test_each_item_once_in_each_rankers_order_and_teams_balanced(a, b, request_id):
    shown = team_draft(a, b, "e", request_id)
    items = [item for item, _ in shown]
    assert len(items) == len(set(items)) <= max(len(a), len(b))
    for team, ranked in (("champion", a), ("candidate", b)):
        picked = [item for item, t in shown if t == team]
        assert picked == sorted(picked, key=ranked.index), "a team picks in its ranker's order"
    sizes = [sum(t == team for _, t in shown) for team in ("champion", "candidate")]
    assert abs(sizes[0] - sizes[1]) <= 1
    # a shorter merge is a prefix of a longer one: a page showing 3 credits the same teams
    longer = team_draft(a, b, "e", request_id, 20)
    assert longer[:len(shown)] == shown and team_draft(a, b, "e", request_id, 3) == longer[:3]


def test_the_coins_are_fair_and_the_first_pick_is_a_fair_coin():
    first = [next(coins("e", f"r{i}")) for i in range(20_000)]
    # 4.5 standard deviations of a fair coin over 20,000 requests (deterministic: no flake)
    assert abs(sum(first) - 10_000) < 4.5 * (20_000 * 0.25) ** 0.5
    picks = [team_draft(["a", "b"], ["c", "d"], "e", f"r{i}")[0][1] for i in range(4000)]
    assert 0.45 < picks.count("candidate") / 4000 < 0.55


def test_clicks_on_equal_rankers_favour_no_team():
    """The same ranking on both sides, clicks at random positions: credit splits evenly."""
    rng = random.Random(3)
    ranked = [f"i{j}" for j in range(10)]
    outcomes = []
    for i in range(6000):
        clicked = [item for pos, item in enumerate(ranked) if rng.random() < 0.3 / (pos + 1)]
        outcomes.append(preference(team_draft(ranked, ranked, "e", f"r{i}"), clicked))
    compared = [o for o in outcomes if o is not None]
    mean = sum(compared) / len(compared)
    assert len(compared) > 2000 and abs(mean) < 4.5 / len(compared) ** 0.5


def test_credit_and_preference():
    shown = [("a", "champion"), ("b", "candidate"), ("c", "candidate")]
    assert credit(shown, ["b", "c", "z"]) == (0, 2) and preference(shown, ["b", "c"]) == 1
    assert credit(shown, {"a": 3.0}) == (1, 0) and preference(shown, {"a": 3.0}) == -1
    assert preference(shown, ["a", "b"]) == 0 and preference(shown, ["z"]) is None


def test_the_route_shows_what_the_worker_credits():
    lists = {"recs:1": ["a", "b", "c", "d"], "recs:2": ["c", "e", "a", "f"]}
    route = Route("recs:1", ("recs:2",), interleave=True)
    for i in range(50):
        shown = route.shown("recs-v2", f"r{i}", lists)
        merged = team_draft(lists["recs:1"], lists["recs:2"], "recs-v2", f"r{i}")
        assert shown == [(item, "recs:1" if team == "champion" else "recs:2")
                         for item, team in merged]
    assert Route("recs:1", ("recs:2",)).shown("recs-v2", "r", lists) == \
        [(item, "recs:1") for item in lists["recs:1"]], "shadow mode: the served list"
    assert repr(route) == "Route(serve='recs:1', shadow=('recs:2',), interleave=True)"
    assert repr(Route("m:1")) == "Route(serve='m:1', shadow=())"
