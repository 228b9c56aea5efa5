"""Promotion reaches the model registry: a ``promote`` moves the champion alias.

Two registries with the same small interface (``get``, ``set``, ``applied_seq``):

- :class:`JsonRegistry`, the default: a JSON file mapping alias → ``model:version`` that a
  service reloads; written atomically (temporary file + rename) under a lock file;
- :class:`MlflowRegistry`: MLflow's registered-model aliases (needs the ``mlflow`` extra).

:func:`apply_control_event` sets the alias on ``promote`` only (``rollback`` and ``hold``
leave it on the old champion). It is idempotent: the registry remembers the last ``seq``
applied per experiment, so a control event replayed when a router restarts is not applied
twice, even if someone moved the alias by hand since. :class:`RegistryUpdater` listens to a
:class:`~rollguard.serving.router.Router` and applies its events in its own thread.

>>> import tempfile, pathlib
>>> registry = JsonRegistry(pathlib.Path(tempfile.mkdtemp()) / "aliases.json")
>>> promote = {"experiment": "churn-v7", "seq": 4, "action": "promote", "champion": "churn:7"}
>>> apply_control_event(registry, promote), registry.get("champion")
(True, 'churn:7')
>>> apply_control_event(registry, promote)  # replayed: nothing to do
False
>>> apply_control_event(registry, {**promote, "seq": 5, "action": "rollback"})
False
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import threading
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("rollguard.serving.registry")

#: the key of the JSON registry file under which the last applied seq per experiment is kept
APPLIED_KEY = "rollguard.applied_seq"


class RegistryError(RuntimeError):
    """The registry refused a change for good (unknown model or version, bad file)."""


class Registry(Protocol):
    def get(self, alias: str, model: str | None = None) -> str | None: ...

    def set(self, alias: str, model_version: str, *, experiment: str | None = None,
            seq: int | None = None) -> bool: ...

    def applied_seq(self, experiment: str, model: str) -> int: ...


def split_model_version(model_version: str) -> tuple[str, str]:
    """``("churn", "7")`` from ``"churn:7"`` (the last colon separates the version).

    >>> split_model_version("team:churn:7")
    ('team:churn', '7')
    """
    text = model_version if isinstance(model_version, str) else ""
    model, colon, version = text.rpartition(":")
    if not colon or not model or not version:
        raise RegistryError(f"expected a 'model:version' string, got {model_version!r}.")
    return model, version


# -- the JSON file -------------------------------------------------------------------------

class JsonRegistry:
    """Aliases in a JSON file: ``{"champion": "churn:7", ...}`` (plus rollguard's bookkeeping).

    ``get`` answers from memory; call ``reload()`` (cheap when the file did not change) to
    see another process's changes. Other languages read the file as a plain JSON object.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._data: dict[str, Any] = {}
        self._stamp: tuple[int, int, int] | None = None
        self.reload()

    def reload(self) -> bool:
        """Re-read the file if it changed; True when it did."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            changed, self._data, self._stamp = self._stamp is not None, {}, None
            return changed
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return False
        self._data, self._stamp = self._read(), stamp
        return True

    def aliases(self) -> dict[str, str]:
        """Every alias and the ``model:version`` it names."""
        return {k: v for k, v in self._data.items() if k != APPLIED_KEY}

    def get(self, alias: str, model: str | None = None) -> str | None:
        """The ``model:version`` of ``alias``, or None (``model`` is accepted and unused)."""
        return self.aliases().get(alias)

    def applied_seq(self, experiment: str, model: str | None = None) -> int:
        """The last control ``seq`` of ``experiment`` applied to this file (0 if none)."""
        return int(self._data.get(APPLIED_KEY, {}).get(experiment, 0))

    def set(self, alias: str, model_version: str, *, experiment: str | None = None,
            seq: int | None = None) -> bool:
        """Point ``alias`` at ``model_version`` (and remember ``seq`` for ``experiment``).

        True when the alias changed; setting the value it already has writes nothing.
        """
        split_model_version(model_version)
        if alias == APPLIED_KEY:
            raise RegistryError(f"{APPLIED_KEY!r} is rollguard's own key, not an alias.")
        with self._locked():
            self._stamp = None
            self.reload()  # another process may have written since we last read
            data = dict(self._data)
            changed = data.get(alias) != model_version
            data[alias] = model_version
            applied = dict(data.get(APPLIED_KEY, {}))
            if experiment is not None and seq is not None and applied.get(experiment, 0) < seq:
                applied[experiment] = seq
                data[APPLIED_KEY] = applied
            elif not changed:
                return False
            self._write(data)
            self.reload()
        return changed

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RegistryError(
                f"The registry file {self.path} is not readable JSON ({exc}).") from None
        if not isinstance(data, dict):
            raise RegistryError(f"The registry file {self.path} must hold a JSON object, "
                                f"not a {type(data).__name__}.")
        return data

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(data, file, indent=2, sort_keys=True)
                file.write("\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self.path)  # readers see the old file or the new one, whole
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @contextmanager
    def _locked(self):
        """Serialise writers across processes (several service replicas may apply one event)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


#: MLflow error codes that mean "no such model, version or alias"
_MLFLOW_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


# -- MLflow ----------------------------------------------------------------------------------

class MlflowRegistry:
    """MLflow registered-model aliases (``models:/churn@champion``); needs the ``mlflow`` extra.

    The last applied seq per experiment is kept as a registered-model tag
    ``rollguard.applied_seq.<experiment>``.
    """

    def __init__(self, tracking_uri: str | None = None, registry_uri: str | None = None,
                 client: Any = None) -> None:
        if client is None:
            try:
                from mlflow import MlflowClient  # optional: imported only when used
            except ImportError:
                raise RegistryError("MlflowRegistry needs MLflow: install rollguard's mlflow "
                                    "extra (or mlflow-skinny).") from None
            client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
        self.client = client

    def get(self, alias: str, model: str | None = None) -> str | None:
        """``model:version`` of ``model``'s ``alias``, or None when it has no such alias."""
        if not model:
            raise RegistryError("MLflow aliases belong to a registered model: pass model=.")
        try:
            version = self.client.get_model_version_by_alias(model, alias)
        except Exception as exc:  # noqa: BLE001 - MlflowException; only "not found" is an answer
            if getattr(exc, "error_code", "") in _MLFLOW_NOT_FOUND:
                return None
            raise
        return f"{model}:{version.version}"

    def applied_seq(self, experiment: str, model: str) -> int:
        try:
            tags = self.client.get_registered_model(model).tags
        except Exception as exc:  # noqa: BLE001
            if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                return 0
            raise
        return int(tags.get(f"rollguard.applied_seq.{experiment}", 0))

    def set(self, alias: str, model_version: str, *, experiment: str | None = None,
            seq: int | None = None) -> bool:
        """Point ``model``'s ``alias`` at ``version``; True when it changed."""
        model, version = split_model_version(model_version)
        changed = self.get(alias, model) != model_version
        try:
            if changed:
                self.client.set_registered_model_alias(model, alias, version)
            if experiment is not None and seq is not None:
                self.client.set_registered_model_tag(
                    model, f"rollguard.applied_seq.{experiment}", str(seq))
        except Exception as exc:  # noqa: BLE001
            if getattr(exc, "error_code", "") in _MLFLOW_NOT_FOUND:
                raise RegistryError(f"MLflow refused to set {model}@{alias} to version {version}: "
                                    f"{getattr(exc, 'message', exc)}") from None
            raise
        return changed


# -- applying control events ---------------------------------------------------------------

def _field(event: Any, name: str) -> Any:
    return event[name] if isinstance(event, Mapping) else getattr(event, name)


def _has(event: Any, name: str) -> bool:
    return name in event if isinstance(event, Mapping) else hasattr(event, name)


def apply_control_event(registry: Registry, event: Any, alias: str = "champion") -> bool:
    """Move ``alias`` to the new champion on ``promote``, and back to the former champion on
    a ``rollback`` during the bake window after a promotion; True when the registry changed.

    ``event``: a control event or router state (attributes) or a mapping with
    ``experiment``, ``seq``, ``action``, ``champion`` (and ``evidence``, for a rollback).
    ``alias`` may name the experiment or model, e.g. ``"{model}-champion"``, so several
    models can share one JSON file. Other actions change nothing (a ``rollback`` before any
    promotion leaves the alias where it is); an event whose ``seq`` was already applied
    changes nothing.
    """
    action = _field(event, "action")
    if action == "rollback":
        evidence = _field(event, "evidence") if _has(event, "evidence") else None
        if not evidence or "bake" not in evidence:
            return False  # not after a promotion: the alias never moved
    elif action != "promote":
        return False
    experiment, seq = _field(event, "experiment"), _field(event, "seq")
    champion = _field(event, "champion")
    model, _ = split_model_version(champion)
    if registry.applied_seq(experiment, model) >= seq:
        return False
    name = alias.format(experiment=experiment, model=model)
    changed = registry.set(name, champion, experiment=experiment, seq=seq)
    if changed:
        log.info("Registry alias %s now names %s (%s by %s seq %d).", name, champion,
                 "promoted" if action == "promote" else "rolled back to", experiment, seq)
    return changed


class RegistryUpdater:
    """Applies a Router's control events to a registry, in its own thread, retrying failures.

    The router's thread only hands over the latest state per experiment, so a slow or
    unreachable registry never delays routing. A failure is retried with a growing pause
    (up to ``max_backoff`` s) unless it is a :class:`RegistryError` (logged and skipped).

    >>> import tempfile, pathlib
    >>> from rollguard.serving.router import Router
    >>> router = Router("127.0.0.1:1", experiments={"churn-v7": "churn:6"})  # not started
    >>> registry = JsonRegistry(pathlib.Path(tempfile.mkdtemp()) / "aliases.json")
    >>> with RegistryUpdater(router, registry) as updater:
    ...     updater.wait_idle(1.0)
    True
    """

    def __init__(self, router: Any, registry: Registry, alias: str = "champion",
                 max_backoff: float = 30.0) -> None:
        self.registry = registry
        self.alias = alias
        self.max_backoff = max_backoff
        self._pending: dict[str, Any] = {}
        self._busy = False
        self._cond = threading.Condition()
        self._closed = False
        #: events that changed the registry, and failed attempts
        self.changes = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="rollguard-registry", daemon=True)
        self._thread.start()
        router.on_change(self._offer)

    def _offer(self, state: Any) -> None:
        with self._cond:
            self._pending[_field(state, "experiment")] = state  # newer supersedes older
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every offered event has been applied (or given up); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def __enter__(self) -> RegistryUpdater:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        first_backoff = backoff = min(0.5, self.max_backoff)
        while True:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._pending or self._closed)
                if self._closed:
                    return
                experiment, state = next(iter(self._pending.items()))
                del self._pending[experiment]
                self._busy = True
            try:
                if apply_control_event(self.registry, state, self.alias):
                    self.changes += 1
                backoff = first_backoff
            except RegistryError as exc:
                self.errors += 1
                log.error("The registry refused %s seq %s and it is skipped: %s",
                          experiment, _field(state, "seq"), exc)
            except Exception as exc:  # noqa: BLE001 - registry down: retry, newest event first
                self.errors += 1
                log.warning("Updating the registry for %s failed (%s); retrying in %g s.",
                            experiment, exc, backoff)
                with self._cond:
                    self._pending.setdefault(experiment, state)
                    self._cond.wait_for(lambda: self._closed, backoff)
                backoff = min(backoff * 2, self.max_backoff)
