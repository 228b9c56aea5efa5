"""A person steering an experiment: manual promote, rollback, pause and resume.

:func:`apply_request` applies one :class:`~rollguard.schemas.events.ControlRequest` to an
experiment's :class:`~rollguard.decisions.policy.Policy` at the point its analysis has
reached, and returns the control event it leads to; a request that cannot apply raises
:class:`Refused` with one sentence, and changes nothing. The event's ``ts`` is the event
time of the last joined record the policy took, and ``evidence.manual`` says who, why and
at which record (``at_record``), so a replay given the same requests applies each at the
same point and publishes the same events.

>>> from rollguard.schemas import ControlRequest, parse_experiments
>>> from rollguard.decisions.policy import Policy
>>> from rollguard.streams.records import ArmView, JoinedRecord, SCORED
>>> [exp] = parse_experiments('''
... {name: e, task: binary, mode: shadow, champion: m:1, candidates: [m:2],
...  primary: {metric: accuracy}}''', "doc.yaml")
>>> policy = Policy(exp)
>>> views = (ArmView("m:1", True, 1, None, 1.0, None, 5.0),
...          ArmView("m:2", False, 1, None, 1.0, None, 5.0))
>>> [e.action for e in policy.on_record(JoinedRecord(SCORED, 5.0, "r1", "e", None, None, views))]
['start']
>>> ask = lambda action: ControlRequest(experiment="e", action=action, reason="release freeze",
...                                     by="ana", request_id=f"q-{action}", requested_at=1.0)
>>> event = apply_request(policy, ask("pause"))
>>> event.action, event.seq, event.ts, event.evidence["manual"]["at_record"]
('pause', 2, 5.0, 1)
>>> print(event.reason)
e is paused by ana: release freeze; no traffic change and no automatic decision until it is resumed (its statistics keep counting).
>>> apply_request(policy, ask("pause"))
Traceback (most recent call last):
...
rollguard.decisions.manual.Refused: experiment 'e' is already paused (by ana: release freeze): resume it first.
>>> apply_request(policy, ask("rollback")).action
'rollback'
>>> apply_request(policy, ask("resume"))
Traceback (most recent call last):
...
rollguard.decisions.manual.Refused: experiment 'e' is already over (rollback, seq 3): a manual resume changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rollguard.decisions.actions import COMPLETE, PAUSE, RESUME, ROLLBACK
from rollguard.schemas.events import ControlEvent, ControlRequest

if TYPE_CHECKING:
    from rollguard.decisions.policy import Policy


class Refused(ValueError):
    """A control request that cannot apply; the message is one sentence saying why."""


def apply_request(policy: Policy, request: ControlRequest) -> ControlEvent:
    """The control event ``request`` leads to (raises :class:`Refused` when it cannot apply)."""
    name = policy.experiment.name
    if policy.final is not None:
        raise Refused(f"experiment '{name}' is already over ({policy.final['action']}, seq "
                      f"{policy.final['seq']}): a manual {request.action} changes nothing.")
    if policy.start_ts is None:
        raise Refused(f"experiment '{name}' has had no traffic yet, so there is nothing to "
                      f"{request.action}: ask again once it has started.")
    note = manual_note(request, policy.records)
    event = _ACTIONS[request.action](policy, request, _words(request), _ts(policy), note)
    event.evidence["manual"] = note
    return event


def manual_note(request: ControlRequest, at_record: int) -> dict[str, Any]:
    """Who asked, why, and the record count the analysis had reached (``evidence.manual``)."""
    return {"action": request.action, "candidate": request.candidate, "by": request.by,
            "reason": request.reason, "request_id": request.request_id,
            "requested_at": request.requested_at, "at_record": at_record}


def scheduled_request(obj: dict[str, Any]) -> tuple[int, ControlRequest]:
    """``(at_record, request)`` from a control event the worker published for a person's
    request (its ``evidence.manual``), or from a control request with an ``at_record`` key:
    what replay needs to apply it at the same point. Raises ValueError in one sentence.

    >>> at, request = scheduled_request({"experiment": "e", "seq": 2, "action": "pause",
    ...     "evidence": {"manual": {"action": "pause", "by": "ana", "reason": "freeze",
    ...                             "request_id": "q1", "requested_at": 1.0, "at_record": 40}}})
    >>> at, request.action, request.by
    (40, 'pause', 'ana')
    """
    import msgspec

    manual = (obj.get("evidence") or {}).get("manual") if isinstance(obj, dict) else None
    fields = {**manual, "experiment": obj.get("experiment")} if manual else obj
    if not isinstance(fields, dict) or not isinstance(fields.get("at_record"), int) \
            or isinstance(fields.get("at_record"), bool) or fields["at_record"] < 0:
        raise ValueError("a control request for replay needs at_record, the number of records "
                         "the analysis had taken (the live event's evidence.manual.at_record).")
    body = {k: v for k, v in fields.items() if k != "at_record" and v is not None}
    try:
        request = msgspec.convert(body, ControlRequest)
    except msgspec.ValidationError as exc:
        raise ValueError(f"not a control request: {exc}.") from None
    return fields["at_record"], request


def _pause(policy: Policy, request: ControlRequest, words: str, ts: float,
           note: dict[str, Any]) -> ControlEvent:
    name = policy.experiment.name
    if policy.paused is not None:
        raise Refused(f"experiment '{name}' is already paused (by {policy.paused['by']}: "
                      f"{_strip(policy.paused['reason'])}): resume it first.")
    policy.paused = note
    return policy._event(PAUSE, ts, (
        f"{name} is paused by {request.by}: {words}; no traffic change and no automatic "
        "decision until it is resumed (its statistics keep counting)."))


def _resume(policy: Policy, request: ControlRequest, words: str, ts: float,
            note: dict[str, Any]) -> ControlEvent:
    name = policy.experiment.name
    if policy.paused is None:
        raise Refused(f"experiment '{name}' is not paused: there is nothing to resume.")
    policy.paused = None
    return policy._event(RESUME, ts, f"{name} is resumed by {request.by}: {words}; rollguard "
                                     "decides again from its next record.")


def _rollback(policy: Policy, request: ControlRequest, words: str, ts: float,
              note: dict[str, Any]) -> ControlEvent:
    who = policy.phase.rollback_subject(policy)
    return policy._final(ROLLBACK, ts, f"{who} by hand, by {request.by}: {words}.")


def _promote(policy: Policy, request: ControlRequest, words: str, ts: float,
             note: dict[str, Any]) -> ControlEvent:
    name, bake = policy.experiment.name, policy.bake
    if bake is not None:
        if request.candidate not in (None, bake.winner):
            raise Refused(f"experiment '{name}' is baking {bake.winner}, not "
                          f"{request.candidate}: promote {bake.winner} to complete its bake "
                          "window, or roll it back.")
        return policy._final(COMPLETE, ts, (
            f"{bake.winner} completes its bake window early, by hand, by {request.by}: "
            f"{words}."), bake.winner)
    active = [t.arm for t in policy.active_tracks()]
    candidate = request.candidate
    if candidate is None:
        if len(active) != 1:
            raise Refused(f"experiment '{name}' has {len(active)} candidates under test "
                          f"({', '.join(active)}): say which to promote with --candidate.")
        candidate = active[0]
    elif candidate not in active:
        raise Refused(f"'{candidate}' is not a candidate under test in experiment '{name}' "
                      f"(those are: {', '.join(active) or 'none'}).")
    return policy.promote(candidate, ts, f"{candidate} is promoted by hand, by {request.by}: "
                                         f"{words}")


_ACTIONS = {"pause": _pause, "resume": _resume, "rollback": _rollback, "promote": _promote}


def _ts(policy: Policy) -> float:
    return policy.last_ts if policy.last_ts is not None else policy.start_ts


def _strip(text: str) -> str:
    return text.strip().rstrip(".")


def _words(request: ControlRequest) -> str:
    """The person's reason as a clause of rollguard's sentence."""
    return _strip(request.reason) or "no reason given"
