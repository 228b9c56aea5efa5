"""The dashboard's buttons: a person's promote, rollback, pause or resume from the page.

Off unless the dashboard runs with ``--allow-control``, and then every request must carry the
token the operator configured (header ``X-Rollguard-Token``; a page of another site cannot
set it). A request becomes a control request through :func:`rollguard.steer.send_request`,
exactly as ``rollguard pause`` sends one, and the answer is the worker's: the control event
it published, or its refusal in one sentence.

>>> gate = ControlGate(allowed=True, token="s3cret")
>>> gate.check("wrong", {"action": "pause", "reason": "freeze"})
(403, "The control token is missing or wrong: give the token the dashboard's operator configured (ROLLGUARD_DASHBOARD_TOKEN).")
>>> gate.check("s3cret", {"action": "stop", "reason": "freeze"})
(400, 'The action must be one of promote, rollback, pause or resume, not "stop".')
>>> gate.check("s3cret", {"action": "pause", "reason": "freeze"}) is None
True
>>> ControlGate(allowed=False, token=None).check("x", {})[0]
403
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any, Callable

from rollguard.steer import Answer, SteerError, UnknownExperiment, new_request, send_request
from rollguard.streams.topics import TopicNames

ACTIONS = ("promote", "rollback", "pause", "resume")
TOKEN_HEADER = "X-Rollguard-Token"
#: seconds the page waits for the worker's answer
WAIT_S = 20.0


@dataclass(frozen=True)
class ControlGate:
    """Whether control is on, and the token a request must carry."""

    allowed: bool
    token: str | None

    def check(self, token: str | None, body: Any) -> tuple[int, str] | None:
        """None when the request may go on, else ``(HTTP status, one sentence)``."""
        if not self.allowed or not self.token:
            return 403, ("Control from the page is off: the operator starts the dashboard with "
                         "--allow-control (and a token) to turn it on.")
        if token is None or not hmac.compare_digest(token.encode(), self.token.encode()):
            return 403, ("The control token is missing or wrong: give the token the "
                         "dashboard's operator configured (ROLLGUARD_DASHBOARD_TOKEN).")
        if not isinstance(body, dict):
            return 400, "The request must be a JSON object with action and reason."
        action = body.get("action")
        if action not in ACTIONS:
            return 400, (f"The action must be one of promote, rollback, pause or resume, not "
                         f"{_quoted(action)}.")
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            return 400, "Give a reason: it is recorded in the control event."
        for key in ("by", "candidate"):
            if body.get(key) is not None and not isinstance(body[key], str):
                return 400, f"{key} must be a string."
        return None


def apply(gate: ControlGate, bootstrap: str, names: TopicNames, experiment: str,
          token: str | None, body: Any, client: str, *,
          send: Callable[..., Answer | None] = send_request) -> tuple[int, dict[str, Any]]:
    """``(HTTP status, JSON answer)`` for one press of a button."""
    problem = gate.check(token, body)
    if problem is not None:
        return problem[0], {"error": problem[1]}
    by = (body.get("by") or "").strip() or f"the dashboard ({client})"
    try:
        request = new_request(experiment, body["action"], reason=body["reason"], by=by,
                              candidate=body.get("candidate") or None)
        answer = send(bootstrap, names, request, wait=WAIT_S)
    except UnknownExperiment as exc:
        return 404, {"error": str(exc)}
    except ValueError as exc:
        return 400, {"error": str(exc)}
    except SteerError as exc:
        return 502, {"error": str(exc)}
    if answer is None or answer.event is None:
        return 409, {"error": answer.refused if answer else "No answer."}
    event = answer.event
    return 200, {"sentence": answer.sentence, "seq": event.seq, "action": event.action,
                 "reason": event.reason}


def _quoted(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)
