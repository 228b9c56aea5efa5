"""Team-draft interleaving: the champion's and the candidate's rankings merged into the one
list a user sees, each item credited to the ranker ("team") that placed it.

The method is Radlinski, Kurup & Joachims (2008), "How does clickthrough data reflect
retrieval quality?", CIKM; its large-scale validation is Chapelle, Joachims, Radlinski &
Yue (2012), "Large-scale validation and analysis of interleaved search evaluation", ACM
TOIS 30(1). Both rankers answer every request; their lists are merged like two captains
picking players: in each round a coin decides which team picks first, then each team adds
its highest-ranked item not yet in the list. A user's clicks on the list credit the team that
placed each clicked item: the candidate **wins** a request when its team placed more of the
engaged items, **loses** when the champion's did, and ties otherwise. The comparison is
paired (the same user, the same moment, one list) and it sees which ranker's items users
prefer, so it needs far fewer users than an A/B test of the same rankers (measured in
``bench/bench_interleaving.py``).

The rule is deterministic per request, so the service that shows the list and the worker
that credits the clicks agree without exchanging the list, in any language:

1. **Coins.** The coins are the bits of SHA-256 over the UTF-8 bytes of
   ``experiment + "/" + request_id + "/" + str(block)`` for block 0, 1, 2 … (block 0 serves
   256 coins, which is enough for lists of up to 512 items), each byte's most significant
   bit first. Coin 1 means the candidate picks first, 0 the champion.
2. **Rounds.** Start with an empty list and empty teams. While the list is shorter than
   ``length`` (default: the longer input list's length) and each input list still has an
   item not in it: if the teams are the same size, take the next coin and let it say who
   picks; otherwise the smaller team picks. The picking team appends its highest-ranked item
   not yet in the list, and that item joins its team.
3. **Credit.** Each engaged item of the list credits its team one point.

So the list starts with the top item of one ranker, ties at worst alternate, and a user
shown a prefix of it (the first 5 of 10, say) sees exactly the items the worker credits.
Test vectors for other languages are in ``tests/data/interleaving_vectors.json`` (see
docs/serving.md).

>>> shown = team_draft(["a", "b", "c"], ["b", "d", "a"], "recs-v2", "req-1")
>>> shown
[('b', 'candidate'), ('a', 'champion'), ('d', 'candidate')]
>>> credit(shown, ["d", "a"]), preference(shown, ["d"]), preference(shown, ["c"])
((1, 1), 1, None)
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator, Mapping, Sequence

#: the two teams, as :func:`team_draft` names them
CHAMPION, CANDIDATE = "champion", "candidate"


def coins(experiment: str, request_id: str) -> Iterator[int]:
    """The request's coins, 0 (champion first) or 1 (candidate first), without end.

    >>> import itertools
    >>> "".join(str(c) for c in itertools.islice(coins("recs-v2", "req-1"), 16))
    '1110110111010111'
    """
    block = 0
    while True:
        digest = hashlib.sha256(f"{experiment}/{request_id}/{block}".encode()).digest()
        for byte in digest:
            for shift in (7, 6, 5, 4, 3, 2, 1, 0):
                yield (byte >> shift) & 1
        block += 1


def team_draft(champion: Sequence[str], candidate: Sequence[str], experiment: str,
               request_id: str, length: int | None = None) -> list[tuple[str, str]]:
    """The interleaved list: ``(item, team)`` pairs, team ``"champion"`` or ``"candidate"``.

    ``length``: the most items to merge (default: the longer list's length). Lists should
    hold each item once; a repeated item is skipped like one already shown.

    >>> team_draft(["a", "b"], ["a", "b"], "e", "r")   # same lists: the same list, shared
    [('a', 'candidate'), ('b', 'champion')]
    >>> team_draft(["a", "b", "c"], [], "e", "r")      # nothing to merge with
    []
    """
    lists = (champion, candidate)
    teams = (CHAMPION, CANDIDATE)
    if length is None:
        length = max(len(champion), len(candidate))
    shown: list[tuple[str, str]] = []
    taken: set[str] = set()
    sizes = [0, 0]
    nexts = [0, 0]
    flips: Iterator[int] | None = None
    while len(shown) < length:
        for side in (0, 1):  # each list's highest-ranked item not in the list yet
            ranked, i = lists[side], nexts[side]
            while i < len(ranked) and ranked[i] in taken:
                i += 1
            nexts[side] = i
        if nexts[0] >= len(champion) or nexts[1] >= len(candidate):
            break
        if sizes[0] == sizes[1]:
            if flips is None:
                flips = coins(experiment, request_id)
            side = next(flips)
        else:
            side = 0 if sizes[0] < sizes[1] else 1
        item = lists[side][nexts[side]]
        shown.append((item, teams[side]))
        taken.add(item)
        sizes[side] += 1
    return shown


def credit(shown: Sequence[tuple[str, str]],
           engaged: Collection[str] | Mapping[str, float]) -> tuple[int, int]:
    """``(champion, candidate)``: how many engaged items each team placed in ``shown``.

    >>> credit([("a", "champion"), ("b", "candidate"), ("c", "champion")], ["a", "c", "z"])
    (2, 0)
    """
    found = engaged if isinstance(engaged, (set, frozenset, Mapping)) else set(engaged)
    champion = candidate = 0
    for item, team in shown:
        if item in found:
            if team == CANDIDATE:
                candidate += 1
            else:
                champion += 1
    return champion, candidate


def preference(shown: Sequence[tuple[str, str]],
               engaged: Collection[str] | Mapping[str, float]) -> int | None:
    """+1 when the candidate wins the request, −1 when it loses, 0 for a tie, None when the
    user engaged with no item of ``shown`` (no comparison)."""
    champion, candidate = credit(shown, engaged)
    if champion == candidate == 0:
        return None
    return (candidate > champion) - (candidate < champion)
