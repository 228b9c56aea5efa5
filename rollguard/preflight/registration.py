"""``--register``: after a pass, the candidate's alias moves in the registry, report attached.

- A JSON registry (``register.registry``, the file :class:`rollguard.serving.JsonRegistry`
  keeps): the alias (``register.alias``, default ``candidate``) names the candidate's
  ``model:version``, and the JSON and HTML reports are written beside the file, under
  ``preflight/<model>-<version>.json`` and ``.html`` (the registry file itself holds only
  aliases, which services read).
- MLflow (``register.mlflow``): the registered model's alias is set
  (``models:/loan@candidate`` then loads the candidate), the version gets the tags
  ``rollguard.preflight`` (``pass``) and ``rollguard.preflight.summary``, and the reports are
  logged as artifacts of the run that logged the version, under ``rollguard-preflight/``.

A service that loads its candidate by that alias, and a live experiment that names the
candidate's ``model:version``, then run what preflight checked.

>>> import tempfile, pathlib
>>> from rollguard.serving import JsonRegistry
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> done = register_json(folder / "aliases.json", "candidate", "loan:2", '{"status": "pass"}',
...                      "<html></html>")
>>> JsonRegistry(folder / "aliases.json").get("candidate"), sorted(p.name for p in done["report"])
('loan:2', ['loan-2.html', 'loan-2.json'])
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from rollguard.preflight.config import PreflightInputError

__all__ = ["register_json", "register_mlflow", "model_version_of"]


def model_version_of(config: Any, candidate: Any) -> str:
    """The candidate's ``model:version``: ``register.model_version``, or its MLflow version."""
    found = config.register.model_version or candidate.model_version
    if found is None:
        raise PreflightInputError(f"{config.source}: --register needs the candidate's "
                                  "'model:version': set register.model_version (e.g. loan:2)")
    return found


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)


def register_json(path: Path, alias: str, model_version: str, report_json: str,
                  report_html: str) -> dict[str, Any]:
    from rollguard.serving import JsonRegistry, RegistryError

    folder = Path(path).parent / "preflight"
    stem = _safe(model_version.replace(":", "-"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        json_path, html_path = folder / f"{stem}.json", folder / f"{stem}.html"
        json_path.write_text(report_json, encoding="utf-8")
        html_path.write_text(report_html, encoding="utf-8")
        changed = JsonRegistry(path).set(alias, model_version)
    except RegistryError as bad:
        raise PreflightInputError(str(bad)) from None
    except OSError as bad:
        raise PreflightInputError(f"The registry {path} cannot be written ({bad.strerror}): "
                                  "give a path in a directory you can write to") from None
    return {"registry": str(path), "alias": alias, "model_version": model_version,
            "changed": changed, "report": [json_path, html_path],
            "sentence": f"Registered: alias {alias} = {model_version} in {path} "
                        f"(report in {folder})."}


def register_mlflow(tracking_uri: str | None, registry_uri: str | None, alias: str,
                    model_version: str, run_id: str | None, summary: str, report_json: str,
                    report_html: str) -> dict[str, Any]:
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise PreflightInputError("Registering in MLflow needs MLflow: pip install "
                                  "'rollguard[mlflow]'") from None
    from rollguard.serving import MlflowRegistry, RegistryError
    from rollguard.serving.registry import split_model_version

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
    model, version = split_model_version(model_version)
    try:
        changed = MlflowRegistry(client=client).set(alias, model_version)
        client.set_model_version_tag(model, version, "rollguard.preflight", "pass")
        client.set_model_version_tag(model, version, "rollguard.preflight.summary",
                                     summary[:4000])
        if run_id is None:
            run_id = client.get_model_version(model, version).run_id or None
        attached = None
        if run_id:
            with tempfile.TemporaryDirectory() as tmp:
                for name, text in (("preflight.json", report_json),
                                   ("preflight.html", report_html)):
                    (Path(tmp) / name).write_text(text, encoding="utf-8")
                    client.log_artifact(run_id, str(Path(tmp) / name), "rollguard-preflight")
            attached = f"runs:/{run_id}/rollguard-preflight"
    except RegistryError as bad:
        raise PreflightInputError(str(bad)) from None
    except Exception as bad:  # noqa: BLE001 - MlflowException: one sentence
        raise PreflightInputError(f"MLflow refused the registration of {model_version}: "
                                  f"{str(bad).splitlines()[0] if str(bad) else bad!r}") from None
    where = f"report in {attached}" if attached else "no run to attach the report to"
    return {"registry": "mlflow", "alias": alias, "model_version": model_version,
            "changed": changed, "report": attached,
            "sentence": f"Registered: {model}@{alias} = version {version} in MLflow ({where})."}
