"""What a model service uses: ``Router`` (who serves), ``Reporter`` (what happened), registries.

>>> from rollguard.serving import Router
>>> Router("127.0.0.1:1", experiments={"churn-v7": "churn:6"}).route("churn-v7", "user-42").serve
'churn:6'
"""

from rollguard.serving.assignment import Layout, TrafficError, assign, bucket
from rollguard.serving.interleaving import coins, credit, team_draft
from rollguard.serving.registry import (JsonRegistry, MlflowRegistry, RegistryError,
                                        RegistryUpdater, apply_control_event)
from rollguard.serving.reporter import DeliveryFailure, Reporter, Timing
from rollguard.serving.router import ExperimentState, Route, Router, UnknownExperiment

__all__ = [
    "DeliveryFailure", "ExperimentState", "JsonRegistry", "Layout", "MlflowRegistry",
    "RegistryError", "RegistryUpdater", "Reporter", "Route", "Router", "Timing", "TrafficError",
    "UnknownExperiment", "apply_control_event", "assign", "bucket", "coins", "credit",
    "team_draft",
]
