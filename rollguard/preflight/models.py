"""The candidate and the champion: Python entry points or MLflow models, called one way.

An entry point ``package.module:predict`` is imported from the preflight file's folder and
called with a list of feature dicts; it returns a list of predictions, or of
``(prediction, score)`` pairs (``score``: the probability of the positive class). A model
may also expose ``fit``: ``fit(features, labels)`` returns a new predict function trained on
those rows (the served one is never changed); preflight then draws a learning curve and
runs k-fold cross-validation. ``fit`` is found as the predict function's ``fit`` attribute,
or given in the preflight file (``candidate: {predict: m:predict, fit: m:train}``).

An MLflow model URI (``models:/loan@champion``, ``models:/loan/3``, ``runs:/<id>/model``) is
loaded with ``mlflow.pyfunc`` and called with a pandas DataFrame of the rows; a DataFrame
result with ``prediction`` and ``score`` columns gives pairs.

>>> model = Model("m", lambda rows: [(int(r["x"] > 0), 0.9) for r in rows])
>>> model.predict([{"x": 1.0}, {"x": -2.0}])
[(1, 0.9), (0, 0.9)]
>>> normalise_output([0.2, 1.5], 2)
[(0.2, None), (1.5, None)]
"""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollguard.preflight.config import ModelSpec, PreflightInputError

__all__ = ["Model", "load_model", "normalise_output", "InvalidOutput", "resolve_entry_point"]

Prediction = tuple[Any, Any]   # (prediction, score or None)


class InvalidOutput(ValueError):
    """A model returned something that is not one valid prediction per row."""


@dataclass
class Model:
    """A loaded model: ``predict(rows)`` gives ``[(prediction, score or None), ...]``."""

    name: str                          # how the report names it (its spec)
    function: Callable[[list[dict[str, Any]]], Any]
    fit_function: Callable[..., Any] | None = None
    role: str = ""                     # "candidate" or "champion"
    model_version: str | None = None   # "model:version" when known (MLflow)
    run_id: str | None = None          # the MLflow run that logged it
    info: dict[str, Any] = field(default_factory=dict)

    def predict(self, rows: Sequence[dict[str, Any]]) -> list[Prediction]:
        return normalise_output(self.function(list(rows)), len(rows))

    def predict_many(self, rows: Sequence[dict[str, Any]], batch_size: int) -> list[Prediction]:
        out: list[Prediction] = []
        for start in range(0, len(rows), batch_size):
            out.extend(self.predict(rows[start:start + batch_size]))
        return out

    @property
    def can_fit(self) -> bool:
        return self.fit_function is not None

    def fit(self, rows: Sequence[dict[str, Any]], labels: Sequence[Any]) -> Model:
        """A new model trained on ``rows``; raises what ``fit`` raises."""
        if self.fit_function is None:
            raise TypeError(f"{self.name} exposes no fit")
        fitted = self.fit_function(list(rows), list(labels))
        if not callable(fitted):
            raise InvalidOutput(f"fit of {self.name} returned {type(fitted).__name__}, not a "
                                "predict function")
        return Model(f"{self.name} (refitted)", fitted, role=self.role)


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    if item is not None and callable(item) and not isinstance(value, (list, tuple, dict)):
        try:
            return item()
        except (TypeError, ValueError):
            return value
    return value


def normalise_output(output: Any, n: int) -> list[Prediction]:
    """One ``(prediction, score)`` per row from what a model returned: a list (or numpy array,
    pandas Series) of predictions or of pairs, or a DataFrame (``prediction``, ``score``
    columns, else its first column). Raises :class:`InvalidOutput` on anything else."""
    columns = getattr(output, "columns", None)
    if columns is not None:  # a pandas DataFrame
        names = list(columns)
        if "prediction" in names:
            preds = list(output["prediction"])
            scores = list(output["score"]) if "score" in names else [None] * len(preds)
            output = list(zip(preds, scores))
        elif names:
            output = list(output[names[0]])
        else:
            raise InvalidOutput("returned a DataFrame without columns")
    elif hasattr(output, "tolist") and not isinstance(output, (list, tuple)):
        output = output.tolist()
    if isinstance(output, (str, bytes, dict)) or not hasattr(output, "__len__"):
        raise InvalidOutput(f"returned {type(output).__name__}, not a list of predictions")
    output = list(output)
    if len(output) != n:
        raise InvalidOutput(f"returned {len(output)} predictions for {n} rows")
    pairs: list[Prediction] = []
    for item in output:
        item = _plain(item)
        if hasattr(item, "tolist") and not isinstance(item, (str, bytes)):
            item = item.tolist()
        if isinstance(item, (tuple, list)):
            if len(item) != 2:
                raise InvalidOutput(f"returned a {len(item)}-item entry; expected a prediction "
                                    "or a (prediction, score) pair")
            pairs.append((_plain(item[0]), _plain(item[1])))
        else:
            pairs.append((item, None))
    return pairs


def valid_prediction(pair: Prediction, task: str, classes: set | None) -> str | None:
    """Why ``pair`` is not a valid prediction for the task, or None when it is.

    >>> valid_prediction((1, 0.8), "binary", {0, 1}) is None
    True
    >>> valid_prediction((1, float("nan")), "binary", {0, 1})
    'its score is nan, not a number in [0, 1]'
    >>> valid_prediction((None, None), "regression", None)
    'its prediction is None'
    """
    prediction, score = pair
    if prediction is None:
        return "its prediction is None"
    if isinstance(prediction, float) and not math.isfinite(prediction):
        return f"its prediction is {prediction!r}"
    if not isinstance(prediction, (bool, int, float, str)):
        return f"its prediction is a {type(prediction).__name__}, not a number, string or bool"
    if task == "regression":
        if isinstance(prediction, (bool, str)):
            return f"its prediction {prediction!r} is not a number"
    elif classes is not None and prediction not in classes:
        shown = ", ".join(repr(c) for c in sorted(classes, key=repr)[:10])
        return f"its prediction {prediction!r} is not a class of the training set ({shown})"
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, (int, float)) \
                or not math.isfinite(score) or not 0.0 <= score <= 1.0:
            return f"its score is {score!r}, not a number in [0, 1]"
    return None


# -- loading -----------------------------------------------------------------------------------

@contextmanager
def _importable_from(folder: Path):
    """``folder`` first on sys.path; modules of the same name imported from elsewhere are set
    aside meanwhile (two preflight files in different folders may both have loanmodels.py)."""
    folder = folder.resolve()
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        try:
            sys.path.remove(str(folder))
        except ValueError:
            pass


def _evict_foreign(module_name: str, folder: Path) -> None:
    top = module_name.split(".")[0]
    if not ((folder / f"{top}.py").exists() or (folder / top).is_dir()):
        return  # the folder does not hold it: whatever is imported stays
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        file = getattr(sys.modules[name], "__file__", None)
        if file is None:
            continue
        try:
            Path(file).resolve().relative_to(folder.resolve())
        except ValueError:
            del sys.modules[name]


def resolve_entry_point(ref: str, folder: Path, key: str) -> Any:
    """The object ``module:attr`` names, imported from ``folder``; PreflightInputError if not.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "tinymodel.py").write_text("def predict(rows):\\n    return [0] * len(rows)\\n")
    >>> resolve_entry_point("tinymodel:predict", folder, "candidate")([{}, {}])
    [0, 0]
    """
    module_name, _, attr = ref.partition(":")
    _evict_foreign(module_name, folder)
    with _importable_from(folder):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as bad:
            if bad.name and module_name.startswith(bad.name):
                raise PreflightInputError(f"The {key} {ref} cannot be imported: there is no "
                                          f"module {bad.name!r} in {folder} or on the Python "
                                          "path") from None
            raise PreflightInputError(f"Importing the {key} {ref} failed: it needs the module "
                                      f"{bad.name!r}, which is not installed") from None
        except Exception as bad:  # noqa: BLE001 - the user's module failed: one sentence
            raise PreflightInputError(f"Importing the {key} {ref} failed with "
                                      f"{type(bad).__name__}: {_first_line(bad)}") from None
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise PreflightInputError(f"The {key} {ref}: module {module_name} has no "
                                      f"{attr!r}") from None
    return target


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else "no message").rstrip(".")


def load_model(spec: ModelSpec, folder: Path, role: str) -> Model:
    """The model a spec names (entry point or MLflow URI); raises PreflightInputError."""
    if spec.is_mlflow:
        return _load_mlflow(spec.predict, role)
    function = resolve_entry_point(spec.predict, folder, role)
    if not callable(function):
        raise PreflightInputError(f"The {role} {spec.predict} is a {type(function).__name__}, "
                                  "not a function taking a list of feature dicts")
    fit = resolve_entry_point(spec.fit, folder, f"{role}'s fit") if spec.fit else \
        getattr(function, "fit", None)
    if fit is not None and not callable(fit):
        fit = None
    return Model(spec.predict, function, fit, role=role)


def _load_mlflow(uri: str, role: str) -> Model:
    try:
        import mlflow.pyfunc
        import pandas as pd
    except ImportError:
        raise PreflightInputError(f"The {role} {uri} is an MLflow model, which needs MLflow and "
                                  "pandas: pip install 'rollguard[mlflow]'") from None
    try:
        loaded = mlflow.pyfunc.load_model(uri)
    except Exception as bad:  # noqa: BLE001 - MlflowException, OSError: one sentence
        raise PreflightInputError(f"The {role} {uri} cannot be loaded from MLflow: "
                                  f"{_first_line(bad)}") from None
    model_version = _mlflow_version(uri)

    def predict(rows: list[dict[str, Any]]) -> Any:
        return loaded.predict(pd.DataFrame(rows))

    run_id = getattr(getattr(loaded, "metadata", None), "run_id", None)
    return Model(uri, predict, None, role=role, model_version=model_version, run_id=run_id)


def _mlflow_version(uri: str) -> str | None:
    """``name:version`` of a ``models:/`` URI (an alias resolved), or None."""
    if not uri.startswith("models:/"):
        return None
    rest = uri[len("models:/"):].strip("/")
    try:
        from mlflow import MlflowClient

        client = MlflowClient()
        if "@" in rest:
            name, alias = rest.split("@", 1)
            return f"{name}:{client.get_model_version_by_alias(name, alias).version}"
        name, _, version = rest.partition("/")
        if version.isdigit():
            return f"{name}:{version}"
        if version:  # a stage name (older MLflow): the latest version in it
            found = client.get_latest_versions(name, stages=[version])
            return f"{name}:{found[0].version}" if found else None
    except Exception:  # noqa: BLE001 - only used to name the version; the load already worked
        return None
    return None
