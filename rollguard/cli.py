"""The ``rollguard`` command: ``kafka``, ``topics``, ``schemas``, ``check`` and more.

Every failure a user can cause or fix prints one sentence saying what to do and exits 1;
no traceback reaches the terminal for those.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="rollguard: safe rollouts of ML models on live traffic.")
kafka_app = typer.Typer(no_args_is_help=True, help="A local Apache Kafka broker (KRaft, no Docker).")
topics_app = typer.Typer(no_args_is_help=True, help="Create rollguard's topics.")
schemas_app = typer.Typer(no_args_is_help=True, help="The event contract as JSON Schema.")
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(schemas_app, name="schemas")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

BootstrapOption = typer.Option(
    None, "--bootstrap-servers", "-b", envvar="KAFKA_BOOTSTRAP_SERVERS",
    help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS, else 127.0.0.1:9092).")
PrefixOption = typer.Option(
    None, "--topic-prefix", envvar="ROLLGUARD_TOPIC_PREFIX",
    help="Prefix of every topic name (default: ROLLGUARD_TOPIC_PREFIX, else 'rollguard.').")


def fail(message: str) -> None:
    """Print one sentence to stderr and exit 1."""
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def bootstrap_or_default(bootstrap: Optional[str]) -> str:
    return bootstrap or "127.0.0.1:9092"


# -- kafka ---------------------------------------------------------------------------
@kafka_app.command("start")
def kafka_start(
    port: int = typer.Option(9092, help="Port of the broker's client listener on 127.0.0.1."),
    data_dir: Optional[Path] = typer.Option(None, help="Where the broker keeps its data "
                                            "(default: rollguard's cache, per port)."),
) -> None:
    """Start a single-node KRaft broker from Apache Kafka's jars (resolved once with Maven)."""
    from rollguard.kafka.local import BrokerError, LocalBroker

    broker = LocalBroker(port=port, data_dir=data_dir)
    already = broker.status()
    try:
        info = broker.start(progress=lambda line: err.print(line))
    except BrokerError as exc:
        fail(str(exc))
    verb = "already running" if already else f"started in {info.start_seconds:.1f} s"
    out.print(f"Kafka {info.kafka_version} broker {verb} on {info.bootstrap} "
              f"(pid {info.pid}, data {info.data_dir}).")


@kafka_app.command("status")
def kafka_status(port: Optional[int] = typer.Option(None, help="Only this broker's port.")) -> None:
    """Say whether a local broker runs, and where."""
    from rollguard.kafka.local import LocalBroker, running_brokers

    brokers = [b for b in [LocalBroker(port=port).status()] if b] if port else running_brokers()
    if not brokers:
        out.print("No local Kafka broker is running" + (f" on port {port}." if port else "."))
        raise typer.Exit(3)
    for info in brokers:
        up = time.time() - info.started_at
        out.print(f"Kafka {info.kafka_version} broker running on {info.bootstrap} (pid {info.pid}, "
                  f"up {up:.0f} s, data {info.data_dir}, log {info.log_file}).")


@kafka_app.command("stop")
def kafka_stop(port: int = typer.Option(9092, help="Port of the broker to stop.")) -> None:
    """Stop a local broker cleanly."""
    from rollguard.kafka.local import LocalBroker

    if LocalBroker(port=port).stop():
        out.print(f"Stopped the Kafka broker on 127.0.0.1:{port}.")
    else:
        out.print(f"No local Kafka broker was running on port {port}.")


@kafka_app.command("logs")
def kafka_logs(
    port: int = typer.Option(9092, help="Port of the broker."),
    lines: int = typer.Option(50, "--lines", "-n", help="How many of the last lines to show."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
) -> None:
    """Show a local broker's log."""
    from rollguard.kafka.local import LocalBroker

    broker = LocalBroker(port=port)
    if not broker.log_file.exists():
        fail(f"No broker log at {broker.log_file}: start one with `rollguard kafka start --port {port}`.")
    out.print(broker.tail_log(lines), markup=False)
    if follow:
        with open(broker.log_file, "rb") as log:
            log.seek(0, os.SEEK_END)
            try:
                while True:
                    line = log.readline()
                    if line:
                        sys.stdout.write(line.decode("utf-8", "replace"))
                        sys.stdout.flush()
                    else:
                        time.sleep(0.3)
            except KeyboardInterrupt:
                pass


# -- topics --------------------------------------------------------------------------
@topics_app.command("create")
def topics_create(
    bootstrap: Optional[str] = BootstrapOption,
    prefix: Optional[str] = PrefixOption,
    partitions: int = typer.Option(6, help="Partitions of requests, predictions and labels (equal)."),
) -> None:
    """Create the contract's topics idempotently (control and stats compacted)."""
    from rollguard.kafka.admin import TopicError, create_contract_topics
    from rollguard.streams.topics import TopicNames

    try:
        result = create_contract_topics(bootstrap_or_default(bootstrap), TopicNames(prefix), partitions)
    except TopicError as exc:
        fail(str(exc))
    for topic, what in result.items():
        out.print(f"{what:8} {topic}")


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    main()
