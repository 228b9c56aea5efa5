"""Promotion reaches the registry: JSON file by default, MLflow aliases with the extra."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid

import pytest
from confluent_kafka import Producer

from rollguard.kafka.admin import create_contract_topics
from rollguard.kafka.clients import client_config
from rollguard.serving import (JsonRegistry, MlflowRegistry, RegistryError, RegistryUpdater,
                               Router, apply_control_event)
from rollguard.streams.topics import TopicNames

EXPERIMENT = "churn-v7"


def event(seq: int, action: str, champion: str, experiment: str = EXPERIMENT) -> dict:
    return {"experiment": experiment, "seq": seq, "action": action, "champion": champion}


# -- the JSON registry ----------------------------------------------------------------------

def test_promote_sets_the_alias_and_rollback_or_hold_leave_it(tmp_path):
    registry = JsonRegistry(tmp_path / "aliases.json")
    registry.set("champion", "churn:6")
    assert not apply_control_event(registry, event(1, "start", "churn:6"))
    assert apply_control_event(registry, event(2, "promote", "churn:7"))
    assert JsonRegistry(tmp_path / "aliases.json").get("champion") == "churn:7"  # on disk
    other = event(1, "rollback", "fraud:3", experiment="fraud-abc")
    assert not apply_control_event(registry, other)
    assert not apply_control_event(registry, event(1, "hold", "fraud:3", experiment="fraud-x"))
    assert registry.aliases() == {"champion": "churn:7"}


def test_a_rollback_during_the_bake_window_moves_the_alias_back(tmp_path):
    """After ``promote`` the new champion bakes; a breach rolls back to the former one, and
    the alias follows it back (once: the seq rule holds); ``complete`` changes nothing."""
    registry = JsonRegistry(tmp_path / "aliases.json")
    registry.set("champion", "churn:6")
    bake = {"bake": {"champion": "churn:7", "former": "churn:6"}}
    assert apply_control_event(registry, {**event(2, "promote", "churn:7"), "evidence": bake})
    rollback = {**event(3, "rollback", "churn:6"), "evidence": bake}
    assert apply_control_event(registry, rollback)
    assert registry.get("champion") == "churn:6"
    assert not apply_control_event(registry, rollback)          # read again: nothing
    assert not apply_control_event(registry, {**event(4, "complete", "churn:6"),
                                              "evidence": bake})
    assert registry.get("champion") == "churn:6"


def test_a_replayed_promote_changes_nothing_even_after_a_manual_change(tmp_path):
    path = tmp_path / "aliases.json"
    registry = JsonRegistry(path)
    promote = event(5, "promote", "churn:7")
    assert apply_control_event(registry, promote)
    stamp = path.stat().st_mtime_ns
    assert not apply_control_event(registry, promote)  # replayed: no write at all
    assert path.stat().st_mtime_ns == stamp
    registry.set("champion", "churn:5")  # an operator moves the alias back by hand
    assert not apply_control_event(JsonRegistry(path), promote)  # a restarted router replays
    assert JsonRegistry(path).get("champion") == "churn:5"
    assert apply_control_event(registry, event(6, "promote", "churn:8"))  # a new promotion does
    assert registry.get("champion") == "churn:8"


def test_the_file_is_plain_json_that_a_service_reloads(tmp_path):
    path = tmp_path / "aliases.json"
    service = JsonRegistry(path)
    assert service.get("champion") is None and not service.reload()
    JsonRegistry(path).set("champion", "churn:6")
    assert service.reload() and service.get("champion") == "churn:6"
    assert not service.reload()  # unchanged file: nothing re-read
    data = json.loads(path.read_text())
    assert data["champion"] == "churn:6"  # any language reads it as an object
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".aliases.json.")]  # no temp left


def test_an_alias_template_lets_several_models_share_a_file(tmp_path):
    registry = JsonRegistry(tmp_path / "aliases.json")
    apply_control_event(registry, event(1, "promote", "churn:7"), alias="{model}-champion")
    apply_control_event(registry, event(1, "promote", "fraud:3", experiment="fraud"),
                        alias="{model}-champion")
    assert registry.aliases() == {"churn-champion": "churn:7", "fraud-champion": "fraud:3"}


def test_concurrent_writers_lose_no_alias(tmp_path):
    path = tmp_path / "aliases.json"
    threads = [threading.Thread(target=lambda i=i: JsonRegistry(path).set(f"alias-{i}", f"m:{i}"))
               for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert JsonRegistry(path).aliases() == {f"alias-{i}": f"m:{i}" for i in range(16)}


def test_a_broken_registry_file_is_a_clear_error(tmp_path):
    path = tmp_path / "aliases.json"
    path.write_text("[1, 2]")
    with pytest.raises(RegistryError, match="must hold a JSON object"):
        JsonRegistry(path)
    path.write_text("{")
    with pytest.raises(RegistryError, match="not readable JSON"):
        JsonRegistry(path)
    with pytest.raises(RegistryError, match="'model:version'"):
        apply_control_event(JsonRegistry(tmp_path / "ok.json"), event(1, "promote", "churn7"))


# -- MLflow (optional extra) --------------------------------------------------------------------

@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """A real local MLflow registry: a sqlite backend store, no server."""
    pytest.importorskip("mlflow")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    return MlflowRegistry(tracking_uri=uri, registry_uri=uri)


@pytest.fixture
def mlflow_model(mlflow_store, tmp_path) -> str:
    """A fresh registered model with versions 1 and 2, its champion alias on 1."""
    name = f"churn-{uuid.uuid4().hex[:8]}"
    client = mlflow_store.client
    client.create_registered_model(name)
    for run in range(2):
        client.create_model_version(name, source=f"file://{tmp_path}/model-{run}")
    client.set_registered_model_alias(name, "champion", "1")
    return name


# mlflow's sqlalchemy store warns of deprecations that are not ours to fix
pytestmark_mlflow = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytestmark_mlflow
def test_mlflow_promote_sets_the_registered_model_alias(mlflow_store, mlflow_model):
    client, name = mlflow_store.client, mlflow_model
    assert mlflow_store.get("champion", model=name) == f"{name}:1"
    assert not apply_control_event(mlflow_store, event(3, "rollback", f"{name}:1"))
    assert apply_control_event(mlflow_store, event(4, "promote", f"{name}:2"))
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    client.set_registered_model_alias(name, "champion", "1")  # moved back by hand
    assert not apply_control_event(mlflow_store, event(4, "promote", f"{name}:2"))  # replayed
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert mlflow_store.get("challenger", model=name) is None


@pytestmark_mlflow
def test_mlflow_refuses_an_unknown_version_clearly(mlflow_store, mlflow_model):
    with pytest.raises(RegistryError, match=f"{mlflow_model}@champion"):
        apply_control_event(mlflow_store, event(1, "promote", f"{mlflow_model}:9"))


# -- the updater, fed by a router on a real broker ---------------------------------------------

@pytest.mark.kafka
def test_registry_updater_follows_the_router(kafka_bootstrap, topic_prefix, tmp_path):
    names = TopicNames(topic_prefix)
    create_contract_topics(kafka_bootstrap, names, partitions=2)
    producer = Producer(client_config(kafka_bootstrap, **{"linger.ms": 0}))

    def send(seq: int, action: str, champion: str) -> None:
        value = {"experiment": EXPERIMENT, "seq": seq, "ts": 1.0 * seq, "action": action,
                 "mode": "canary", "champion": champion, "traffic": {champion: 1.0},
                 "shadow": [], "reason": "test.", "evidence": {}}
        producer.produce(names.control, json.dumps(value).encode(), EXPERIMENT.encode())
        producer.flush(10)

    path = tmp_path / "aliases.json"
    JsonRegistry(path).set("champion", "churn:6")
    send(1, "start", "churn:6")
    send(2, "promote", "churn:7")
    with Router(kafka_bootstrap, {EXPERIMENT: "churn:6"}, names.prefix) as router:
        router.wait_ready(15)
        with RegistryUpdater(router, JsonRegistry(path)) as updater:
            assert updater.wait_idle(10)
            assert JsonRegistry(path).get("champion") == "churn:7" and updater.changes == 1
            send(3, "rollback", "churn:7")  # a later experiment's rollback leaves the alias
            deadline = time.monotonic() + 10
            while router.state(EXPERIMENT).seq != 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert updater.wait_idle(10) and JsonRegistry(path).get("champion") == "churn:7"

    JsonRegistry(path).set("champion", "churn:6")  # by hand, after the promotion
    with Router(kafka_bootstrap, {EXPERIMENT: "churn:6"}, names.prefix) as router:  # a restart
        router.wait_ready(15)
        with RegistryUpdater(router, JsonRegistry(path)) as updater:
            assert updater.wait_idle(10) and updater.changes == 0
    assert JsonRegistry(path).get("champion") == "churn:6"


def test_registry_updater_retries_a_failing_registry(tmp_path):
    class FlakyRegistry(JsonRegistry):
        failures = 2

        def set(self, *args, **kwargs):
            if self.failures:
                self.failures -= 1
                raise OSError("registry briefly unreachable")
            return super().set(*args, **kwargs)

    class FakeRouter:  # only the listener hook: the router itself is tested against Kafka
        def on_change(self, callback):
            self.callback = callback

    router, registry = FakeRouter(), FlakyRegistry(tmp_path / "aliases.json")
    with RegistryUpdater(router, registry, max_backoff=0.05) as updater:
        state = type("State", (), event(1, "promote", f"churn:{uuid.uuid4().int % 9 + 1}"))()
        router.callback(state)
        assert updater.wait_idle(10)
    assert updater.errors == 2 and updater.changes == 1 and registry.get("champion") is not None
