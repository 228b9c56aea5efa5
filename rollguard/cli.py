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

HELP = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(add_completion=False, no_args_is_help=True, context_settings=HELP,
                  help="rollguard: safe rollouts of ML models on live traffic.")
kafka_app = typer.Typer(no_args_is_help=True, context_settings=HELP,
                        help="A local Apache Kafka broker (KRaft, no Docker).")
topics_app = typer.Typer(no_args_is_help=True, context_settings=HELP,
                         help="Create rollguard's topics.")
schemas_app = typer.Typer(no_args_is_help=True, context_settings=HELP,
                          help="The event contract as JSON Schema.")
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(schemas_app, name="schemas")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

BootstrapOption = typer.Option(
    None, "--bootstrap-servers", "-b", envvar="KAFKA_BOOTSTRAP_SERVERS",
    help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS, else 127.0.0.1:9092).")
PrefixOption = typer.Option(
    None, "--topic-prefix", envvar="ROLLGUARD_TOPIC_PREFIX",
    help="Prefix of every topic name (default: ROLLGUARD_TOPIC_PREFIX, else 'rollguard.').")


def _print_version(value: bool) -> None:
    if value:
        from rollguard import __version__

        out.print(f"rollguard {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print rollguard's version and exit."),
) -> None:
    """rollguard: safe rollouts of ML models on live traffic."""


def fail(message: str) -> None:
    """Print one sentence to stderr and exit 1."""
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def bootstrap_or_default(bootstrap: Optional[str]) -> str:
    return bootstrap or "127.0.0.1:9092"


# -- kafka ---------------------------------------------------------------------------
@kafka_app.command("start")
def kafka_start(
    port: int = typer.Option(9092, help="Port of the broker's client listener on 127.0.0.1 "
                             "(with --nodes N, the first of N ports)."),
    data_dir: Optional[Path] = typer.Option(None, help="Where the broker keeps its data "
                                            "(default: rollguard's cache, per port)."),
    nodes: int = typer.Option(1, min=1, max=9, help="1: a single broker; 3: a cluster of three "
                              "brokers and controllers on ports PORT to PORT+2."),
) -> None:
    """Start a KRaft broker, or a cluster (--nodes 3), from Apache Kafka's jars (resolved once with Maven)."""
    from rollguard.kafka.local import (BrokerError, LocalBroker, LocalCluster, StageProgress,
                                       find_cluster)

    # each stage on stderr as it begins, then how long it has waited: a spinner on a
    # terminal, else a line every few seconds; the result on stdout
    failed = None
    with StageProgress.on(err) as progress:
        try:
            running = find_cluster(port)
            if running is not None and (nodes == 1 or running.port != port):
                raise BrokerError(
                    f"Port {port} belongs to the local Kafka cluster on port {running.port}: "
                    f"stop it with `rollguard kafka stop --port {running.port}`, or use it as "
                    "it is.")
            if nodes == 1:
                broker = LocalBroker(port=port, data_dir=data_dir)
                already = broker.status()
                info = broker.start(progress=progress)
            else:
                cluster = LocalCluster(port=port, nodes=nodes, data_dir=data_dir)
                already = cluster.status()
                down = [n for n in range(1, nodes + 1) if already and not cluster.node_status(n)]
                info = cluster.start(progress=progress)
        except BrokerError as exc:
            failed = str(exc)
        else:
            progress.done(f"ready on {info.bootstrap} " + (
                "(already running)" if already and not (nodes > 1 and down)
                else f"after {progress.elapsed():.0f} s"))
    if failed is not None:
        fail(failed)
    verb = "already running" if already else f"started in {info.start_seconds:.1f} s"
    if nodes == 1:
        out.print(f"Kafka {info.kafka_version} broker {verb} on {info.bootstrap} "
                  f"(pid {info.pid}, data {info.data_dir}).")
    else:
        if down:
            verb += f" (started node{'s' if len(down) > 1 else ''} {', '.join(map(str, down))} again)"
        out.print(f"Kafka {info.kafka_version} cluster of {info.nodes} nodes {verb} on "
                  f"{info.bootstrap} (cluster id {info.cluster_id}, data {info.data_dir}; stop it "
                  f"with `rollguard kafka stop --port {info.port}`).")


@kafka_app.command("status")
def kafka_status(port: Optional[int] = typer.Option(
        None, help="Only this broker's port (or a port of a cluster's node).")) -> None:
    """Say whether local brokers and clusters run, and where (each node of a cluster)."""
    from rollguard.kafka.local import LocalBroker, LocalCluster, find_cluster, running_brokers, \
        running_clusters

    if port:
        cluster = find_cluster(port)
        clusters = [cluster.status()] if cluster else []
        brokers = [b for b in [LocalBroker(port=port).status()] if b and b.cluster_port is None]
    else:
        clusters = running_clusters()
        brokers = [b for b in running_brokers() if b.cluster_port is None]
    clusters = [c for c in clusters if c]
    if not brokers and not clusters:
        out.print("No local Kafka broker is running" + (f" on port {port}." if port else "."))
        raise typer.Exit(3)
    now = time.time()
    for info in clusters:
        out.print(f"Kafka {info.kafka_version} cluster of {info.nodes} nodes on {info.bootstrap} "
                  f"(cluster id {info.cluster_id}, data {info.data_dir}):")
        cluster = LocalCluster(port=info.port, nodes=info.nodes, data_dir=Path(info.data_dir))
        for node in range(1, info.nodes + 1):
            broker = cluster.node_status(node)
            where = f"  node {node} on 127.0.0.1:{info.port + node - 1}"
            if broker is None:
                out.print(f"{where}: not running (start it again with `rollguard kafka start "
                          f"--nodes {info.nodes} --port {info.port}`).")
            else:
                out.print(f"{where}: alive (pid {broker.pid}, up {now - broker.started_at:.0f} s, "
                          f"log {broker.log_file}).")
    for info in brokers:
        out.print(f"Kafka {info.kafka_version} broker running on {info.bootstrap} (pid {info.pid}, "
                  f"up {now - info.started_at:.0f} s, data {info.data_dir}, log {info.log_file}).")


@kafka_app.command("stop")
def kafka_stop(port: int = typer.Option(
        9092, help="Port of the broker to stop (a cluster's port: all its nodes).")) -> None:
    """Stop a local broker, or every node of a local cluster, cleanly."""
    from rollguard.kafka.local import LocalBroker, find_cluster

    cluster = find_cluster(port)
    if cluster is not None:
        cluster.stop()
        out.print(f"Stopped the Kafka cluster of {cluster.nodes} nodes on {cluster.bootstrap}.")
    elif LocalBroker(port=port).stop():
        out.print(f"Stopped the Kafka broker on 127.0.0.1:{port}.")
    else:
        out.print(f"No local Kafka broker was running on port {port}.")


@kafka_app.command("logs")
def kafka_logs(
    port: int = typer.Option(9092, help="Port of the broker (or of a cluster)."),
    node: Optional[int] = typer.Option(None, help="This node of the cluster on --port."),
    lines: int = typer.Option(50, "--lines", "-n", help="How many of the last lines to show."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
) -> None:
    """Show a local broker's log (a cluster's node's with --node), running or not, wherever
    its --data-dir was."""
    from rollguard.kafka.local import BrokerError, broker_log, tail_file

    try:
        log_file = broker_log(port, node)
    except BrokerError as exc:
        fail(str(exc))
    err.print(f"== {log_file}", markup=False, style="dim")  # which log: stderr, not the lines
    out.print(tail_file(log_file, lines), markup=False)
    if follow:
        with open(log_file, "rb") as log:
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


@schemas_app.command("export")
def schemas_export(directory: Path = typer.Argument(..., help="Where to write the .schema.json files.")) -> None:
    """Write the JSON Schema of every event and of the experiment file (generated from the
    same definitions the parsers use)."""
    from rollguard.schemas import export_json_schemas

    if directory.exists() and not directory.is_dir():
        fail(f"{directory} is a file, not a directory: give a directory to write the schemas "
             "into (it is created if missing).")
    try:
        for path in export_json_schemas(directory):
            out.print(str(path))
    except OSError as exc:
        fail(f"The schemas could not be written to {directory} ({exc.strerror}): give a "
             "directory you can write to.")


@app.command("check")
def check(bootstrap: Optional[str] = typer.Option(
        None, "--bootstrap-servers", "-b", envvar="KAFKA_BOOTSTRAP_SERVERS",
        help="Use this broker (default: start the local one on port 9092 if none runs there).")
          ) -> None:
    """Send one event of each kind of the contract through Kafka and read it back."""
    import uuid

    from rich.table import Table

    from rollguard.kafka.admin import contract_topics, delete_topics
    from rollguard.kafka.clients import BrokerUnreachable, require_broker
    from rollguard.kafka.local import BrokerError, LocalBroker
    from rollguard.kafka.roundtrip import round_trip
    from rollguard.schemas import Invalid, encode
    from rollguard.streams.topics import TopicNames

    if bootstrap is None:
        broker = LocalBroker()
        try:
            info = broker.start(progress=lambda line: err.print(line))
        except BrokerError as exc:
            fail(str(exc))
        bootstrap = info.bootstrap
        out.print(f"Kafka {info.kafka_version} broker on {bootstrap} (pid {info.pid}; "
                  "stop it with `rollguard kafka stop`).")
    names = TopicNames(f"check-{uuid.uuid4().hex[:8]}.")
    try:
        require_broker(bootstrap)
    except BrokerUnreachable as exc:
        fail(str(exc))
    try:
        trips = round_trip(bootstrap, names)
    except Exception as exc:  # noqa: BLE001 - any failure: say it in one sentence
        fail(f"The round trip through {bootstrap} failed: {str(exc).rstrip('.')}.")
    finally:
        delete_topics(bootstrap, [spec.name for spec in contract_topics(names)])
    table = Table(title=f"Round trip through {bootstrap} (topics {names.prefix}*)")
    table.add_column("kind")
    table.add_column("sent → received (JSON)", overflow="fold")
    table.add_column("same")
    ok = True
    for trip in trips:
        same = not isinstance(trip.received, Invalid) and trip.received == trip.sent
        ok &= same
        shown = (trip.received.reason if isinstance(trip.received, Invalid) else
                 f"{trip.received.error} (original bytes {trip.received.value!r})"
                 if trip.kind == "deadletter" else encode(trip.received).decode())
        table.add_row(trip.kind, shown, "yes" if same else "[red]NO[/red]")
    out.print(table)
    if not ok or len(trips) != 5:
        fail("Some events did not come back unchanged: see the table above.")
    out.print("Every event of the contract went through Kafka and came back unchanged.")


@app.command("stats")
def stats(
    experiment: str = typer.Argument(..., help="The experiment's name."),
    bootstrap: Optional[str] = BootstrapOption,
    prefix: Optional[str] = PrefixOption,
    as_json: bool = typer.Option(False, "--json", help="Print the snapshot as JSON."),
    wide: bool = typer.Option(False, "--wide", help="Every column of every table, each as wide "
                              "as it needs (default: the columns that fit the terminal, 80 "
                              "columns when there is none)."),
) -> None:
    """Print the latest statistics snapshot the worker published for EXPERIMENT."""
    import json

    from rollguard.kafka.compacted import TopicUnavailable, latest_values
    from rollguard.stats_view import print_stats
    from rollguard.streams.topics import TopicNames

    names = TopicNames(prefix)
    try:
        latest = latest_values(bootstrap_or_default(bootstrap), names.stats)
    except TopicUnavailable as exc:
        fail(str(exc))
    if experiment not in latest:
        known = ", ".join(sorted(latest)) or "none"
        fail(f"No snapshot of experiment '{experiment}' in {names.stats} (experiments there: "
             f"{known}): is the worker running it?")
    snapshot = json.loads(latest[experiment])
    if as_json:
        sys.stdout.write(json.dumps(snapshot, indent=2) + "\n")
    else:
        print_stats(out, snapshot, wide=wide)


def load_experiment_files(paths: list[Path]) -> list:
    """Every experiment of every file, or one sentence naming the file, experiment and key."""
    from rollguard.schemas import ExperimentError, load_experiments

    experiments, seen = [], {}
    for path in paths:
        if not Path(path).exists():
            fail(f"Experiment file {path} does not exist: give the path of a YAML or JSON file.")
        try:
            for exp in load_experiments(path):
                if exp.name in seen:
                    fail(f"{path}: experiment '{exp.name}' is also defined in {seen[exp.name]}: "
                         "experiment names must be unique.")
                seen[exp.name] = path
                experiments.append(exp)
        except ExperimentError as exc:
            fail(str(exc))
    if not experiments:
        fail("No experiment was given: the files hold none.")
    return experiments


def setup_logging(level: str, fmt: str = "text") -> None:
    """rollguard's log on stderr, as text lines or JSON objects (rollguard/logs.py)."""
    from rollguard.logs import setup_logging as configure

    configure(level, fmt)


@app.command("worker")
def worker(
    experiment_files: list[Path] = typer.Argument(..., help="YAML or JSON experiment files."),
    bootstrap: Optional[str] = BootstrapOption,
    prefix: Optional[str] = PrefixOption,
    app_id: str = typer.Option("rollguard", help="Consumer group and state topics' name; "
                               "workers with the same id share the partitions."),
    data_dir: Path = typer.Option(Path(".rollguard"), help="Where pending joins kept on disk live."),
    partitions: int = typer.Option(6, help="Partitions of the input topics if they do not exist yet."),
    checkpoint_interval: float = typer.Option(
        0.25, help="Seconds between checkpoints (a decision follows its label by about two)."),
    snapshot_interval: float = typer.Option(5.0, help="Seconds between statistics snapshots."),
    instance_id: Optional[str] = typer.Option(
        None, help="A stable id for this worker (static group membership): restarted with the "
        "same id, it takes its partitions back at once instead of after the session timeout."),
    session_timeout: float = typer.Option(45.0, help="Seconds without a heartbeat after which "
                                          "a worker's partitions go to the others."),
    stall_timeout: float = typer.Option(
        120.0, help="Seconds without a complete checkpoint after which the worker stops (exit "
        "code 75) so that its supervisor restarts it."),
    max_skew: float = typer.Option(
        300.0, help="Seconds of event time a join partition may run ahead of the slowest before "
        "it pauses (bounds the evaluator's reorder buffer)."),
    idle_after: float = typer.Option(
        5.0, help="Seconds an input topic read to its end still holds the join's watermark "
        "back (a producer held up by a broker failover is not idle)."),
    metrics_port: Optional[int] = typer.Option(None, help="Serve Prometheus metrics on this "
                                               "port (/metrics)."),
    metrics_host: str = typer.Option("0.0.0.0", help="Address the metrics are served on."),
    log_level: str = typer.Option("INFO", help="rollguard's log level."),
    log_format: str = typer.Option("text", "--log-format", help="text: lines for people; "
                                   "json: one JSON object per line, for log shippers."),
) -> None:
    """Run the Faust worker: join, statistics, sequential tests, control events."""
    from rollguard.agents.app import build_app, prepare_topics, run_worker, serve_metrics
    from rollguard.agents.runtime import WorkerConfig
    from rollguard.kafka.admin import TopicError
    from rollguard.kafka.clients import BrokerUnreachable, require_broker
    from rollguard.streams.topics import TopicNames

    if log_format not in ("text", "json"):
        fail(f"--log-format must be text or json, got {log_format!r}.")
    experiments = load_experiment_files(experiment_files)
    setup_logging(log_level, log_format)
    config = WorkerConfig(bootstrap=bootstrap_or_default(bootstrap), experiments=experiments,
                          names=TopicNames(prefix), app_id=app_id, data_dir=data_dir,
                          checkpoint_interval=checkpoint_interval,
                          snapshot_interval=snapshot_interval, partitions=partitions,
                          instance_id=instance_id, session_timeout=session_timeout,
                          stall_timeout=stall_timeout, max_skew=max_skew,
                          idle_after=idle_after,
                          metrics_port=metrics_port,
                          metrics_host=metrics_host)
    try:
        require_broker(config.bootstrap)
        config.partitions = prepare_topics(config)
    except (BrokerUnreachable, TopicError) as exc:
        fail(str(exc))
    app_, runtime = build_app(config)
    if metrics_port is not None:
        try:
            serve_metrics(runtime, metrics_port, metrics_host)
        except OSError as exc:
            fail(f"The metrics cannot be served on {metrics_host}:{metrics_port} ({exc.strerror}): "
                 "choose another --metrics-port.")
    sys.argv = [sys.argv[0], "worker"]  # Faust's worker reads its own command line
    run_worker(app_, runtime)


@app.command("deadletters")
def deadletters(
    bootstrap: Optional[str] = BootstrapOption,
    prefix: Optional[str] = PrefixOption,
    last: int = typer.Option(50, "--last", "-n", min=0, help="How many of the latest dead "
                             "letters to show."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Then print new dead letters "
                                "as they come, until Ctrl-C."),
) -> None:
    """The inputs the worker could not use, with their reasons: the latest as a table, and
    with --follow the new ones as they come."""
    from rich.table import Table
    from rich.text import Text

    from rollguard.deadletters import DeadLetterError, follow_dead_letters, read_dead_letters
    from rollguard.kafka.clients import BrokerUnreachable, require_broker
    from rollguard.streams.topics import TopicNames

    names = TopicNames(prefix)
    broker, topic = bootstrap_or_default(bootstrap), names.deadletter
    try:
        require_broker(broker)
        rows, older, ends = read_dead_letters(broker, topic, last, prefix=names.prefix)
    except (BrokerUnreachable, DeadLetterError) as exc:
        fail(str(exc))
    if rows:
        table = Table(title=f"Dead letters in {topic}: the latest {len(rows)}" if older
                      else f"Dead letters in {topic}: {len(rows)}")
        table.add_column("time", no_wrap=True)
        table.add_column("input", overflow="fold")
        table.add_column("key", overflow="fold")
        table.add_column("reason", overflow="fold", ratio=1)
        for row in rows:  # Text: a reason's brackets are not markup
            table.add_row(*(Text(cell) for cell in (row.when, row.origin, row.key_text,
                                                     row.error)))
        out.print(table)
    else:
        out.print(f"No dead letters in {topic}.")
    if not follow:
        return
    err.print("Following new dead letters (Ctrl-C to stop)…", style="dim")
    try:
        for row in follow_dead_letters(broker, topic, ends, prefix=names.prefix):
            out.print(f"{row.when}  {row.origin}  key {row.key_text}  {row.error}",
                      markup=False)
    except DeadLetterError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass


@app.command("health")
def health(
    data_dir: Path = typer.Option(Path(".rollguard"), help="The worker's --data-dir."),
    app_id: str = typer.Option("rollguard", help="The worker's --app-id."),
    max_age: float = typer.Option(30.0, help="Seconds since the last complete checkpoint "
                                  "beyond which the worker is unhealthy."),
) -> None:
    """Exit 0 when the worker with this data directory runs and checkpoints, 1 otherwise
    (a healthcheck for Docker, Kubernetes or systemd)."""
    from rollguard.agents.liveness import check_health, liveness_path

    ok, sentence = check_health(liveness_path(data_dir, app_id), max_age)
    out.print(sentence, markup=False, highlight=False)
    raise typer.Exit(0 if ok else 1)


@app.command("replay")
def replay(
    experiment_files: list[Path] = typer.Argument(..., help="YAML or JSON experiment files."),
    events: Optional[Path] = typer.Option(None, "--events", help="A .jsonl replay file (docs/events.md)."),
    from_kafka: bool = typer.Option(False, "--from-kafka", help="Read the input topics instead."),
    since: Optional[float] = typer.Option(None, help="--from-kafka: first event time (epoch s)."),
    until: Optional[float] = typer.Option(None, help="--from-kafka: last event time (epoch s)."),
    bootstrap: Optional[str] = BootstrapOption,
    prefix: Optional[str] = PrefixOption,
    history: Optional[Path] = typer.Option(
        None, "--history", help="Also write the history points the worker would publish "
        "(docs/history.md) to this .jsonl file."),
    requests: Optional[Path] = typer.Option(
        None, "--requests", help="People's control requests to apply where the worker did: "
        "a .jsonl of the control events it published for them (or requests with at_record)."),
) -> None:
    """Write the control events rollguard would emit for these events to stdout, one JSON
    object per line (bad lines are reported on stderr and skipped)."""
    from rollguard.replay import Replay, read_lines, run_from_kafka
    from rollguard.schemas import encode

    if (events is None) == (not from_kafka):
        fail("Give either --events FILE.jsonl or --from-kafka.")
    experiments = load_experiment_files(experiment_files)
    engine = Replay(experiments, on_bad=lambda number, reason: err.print(
        f"line {number}: {reason}", markup=False), history=history is not None)

    def emit(event) -> None:
        sys.stdout.write(encode(event).decode() + "\n")
        sys.stdout.flush()

    if history is not None:
        try:
            history.open("wb").close()
        except OSError as exc:
            fail(f"The history file {history} cannot be written ({exc.strerror}): give a path "
                 "in a directory you can write to.")
    if requests is not None:
        if not requests.exists():
            fail(f"Requests file {requests} does not exist: give the path of a .jsonl file.")
        engine.schedule_requests(read_lines(requests))
    if events is not None:
        if not events.exists():
            fail(f"Replay file {events} does not exist: give the path of a .jsonl file.")
        engine.run_lines(read_lines(events), on_event=emit)
    else:
        from confluent_kafka import KafkaException

        from rollguard.kafka.clients import BrokerUnreachable, require_broker
        from rollguard.streams.topics import TopicNames

        broker = bootstrap_or_default(bootstrap)
        try:
            require_broker(broker)
            run_from_kafka(engine, broker, TopicNames(prefix), since, until, emit,
                           on_warning=lambda text: err.print(text, markup=False))
        except BrokerUnreachable as exc:
            fail(str(exc))
        except KafkaException as exc:
            fail(f"Reading the input topics from {broker} failed ({exc.args[0].str()}): check "
                 "the broker (`rollguard kafka status`) and try again.")
    if history is not None:
        import msgspec

        with history.open("wb") as handle:
            for point in engine.take_history():
                handle.write(msgspec.json.encode(point) + b"\n")
    for refused in engine.refused_requests():
        err.print(f"control request refused: {refused}", markup=False)


@app.command("demo")
def demo(
    fast: bool = typer.Option(False, "--fast", help="Finish in well under two minutes: 400 "
                              "applications/s, labels after ~1.5 s (else 100/s and ~4 s)."),
    seed: int = typer.Option(7, help="The traffic and the models are a pure function of it, and "
                             "so is which experiment is promoted and which rolled back."),
    bootstrap: Optional[str] = typer.Option(
        None, "--bootstrap-servers", "-b", envvar="KAFKA_BOOTSTRAP_SERVERS",
        help="Use this Kafka (default: KAFKA_BOOTSTRAP_SERVERS, else the local broker of "
        "`rollguard kafka start`, started and stopped by the demo)."),
    prefix: Optional[str] = typer.Option(
        None, "--topic-prefix", help="Prefix of the demo's topics (default: a fresh "
        "demo-<time>-<seed>-<id>. per run; ROLLGUARD_TOPIC_PREFIX is not used)."),
    port: int = typer.Option(9092, help="Port of the local broker the demo starts (or uses, "
                             "when one already runs there)."),
    keep_broker: bool = typer.Option(False, "--keep-broker", help="Leave the local broker the "
                                     "demo started running, for `rollguard status`."),
    work_dir: Optional[Path] = typer.Option(None, help="Where the worker's log and data, the "
                                            "registry file and the experiment file go "
                                            "(default: a new temporary directory)."),
    rate: Optional[float] = typer.Option(None, help="Loan applications per second "
                                         "(default: 400 with --fast, else 100)."),
    time_limit: Optional[float] = typer.Option(None, help="Seconds of traffic to wait for every "
                                               "decision (default: 90 with --fast, else 600)."),
    plain: bool = typer.Option(False, "--plain", help="Print progress lines instead of a live "
                               "screen (the default when the output is not a terminal)."),
    service_only: bool = typer.Option(
        False, "--service-only", help="Run only the model service, against the Kafka of "
        "--bootstrap-servers, whose workers run elsewhere (as in docker-compose.yml), until "
        "stopped; the prefix defaults to ROLLGUARD_TOPIC_PREFIX, else 'rollguard.'."),
) -> None:
    """Run a model service, the worker and Kafka on this machine: three experiments on loan
    applications decide live (a promotion, a rollback, a canary), then everything stops."""
    from rollguard.demo import run_demo

    if service_only:
        from rollguard.demo.serve import run_service

        raise typer.Exit(run_service(fast=fast, seed=seed, bootstrap_servers=bootstrap,
                                     topic_prefix=prefix, work_dir=work_dir, rate=rate,
                                     console=out))
    result = run_demo(fast=fast, seed=seed, bootstrap_servers=bootstrap, topic_prefix=prefix,
                      port=port, keep_broker=keep_broker, work_dir=work_dir, rate=rate,
                      time_limit=time_limit, plain=True if plain else None, console=out)
    raise typer.Exit(result.exit_code)


@app.command("status")
def status(
    experiment: Optional[str] = typer.Argument(None, help="Only this experiment."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Redraw every second until Ctrl-C."),
    bootstrap: Optional[str] = BootstrapOption,
    prefix: Optional[str] = PrefixOption,
) -> None:
    """Each experiment's state, read from the worker's stats and control topics: mode, arms,
    traffic, labelled n, the primary metric with Δ and its confidence-sequence bounds,
    guardrails, label delay, dead letters, and the decision with its reason."""
    from rollguard.status import StatusError, show_status

    try:
        show_status(experiment, watch=watch, bootstrap_servers=bootstrap_or_default(bootstrap),
                    topic_prefix=prefix, console=out)
    except StatusError as exc:
        fail(str(exc))


# -- steering by hand -------------------------------------------------------------------
ReasonOption = typer.Option(..., "--reason", "-r", help="Why: recorded in the control event.")
ByOption = typer.Option(None, "--by", help="Who asks (default: user@host).")
WaitOption = typer.Option(30.0, "--wait", help="Seconds to wait for the worker's answer "
                          "(0: send and return).")


def steer(experiment: str, action: str, reason: str, by: Optional[str],
          bootstrap: Optional[str], prefix: Optional[str], wait: float,
          candidate: Optional[str] = None) -> None:
    """Send a control request and print the worker's answer (exit 1 when refused)."""
    from rollguard.steer import SteerError, new_request, send_request
    from rollguard.streams.topics import TopicNames

    try:
        request = new_request(experiment, action, reason=reason, by=by, candidate=candidate)
        answer = send_request(bootstrap_or_default(bootstrap), TopicNames(prefix), request,
                              wait=wait)
    except (SteerError, ValueError) as exc:
        fail(str(exc))
    if answer is None:
        out.print(f"Sent: {action} {experiment} (request {request.request_id}).")
    elif answer.event is None:
        fail(answer.refused)
    else:
        out.print(answer.sentence)


@app.command("promote")
def promote(experiment: str = typer.Argument(..., help="The experiment."),
            reason: str = ReasonOption, by: Optional[str] = ByOption,
            candidate: Optional[str] = typer.Option(
                None, "--candidate", help="The model:version to promote (when there are several)."),
            wait: float = WaitOption, bootstrap: Optional[str] = BootstrapOption,
            prefix: Optional[str] = PrefixOption) -> None:
    """Promote a candidate by hand: it becomes the champion (with its bake window, if the
    experiment has one; during the window, promote completes it)."""
    steer(experiment, "promote", reason, by, bootstrap, prefix, wait, candidate)


@app.command("rollback")
def rollback(experiment: str = typer.Argument(..., help="The experiment."),
             reason: str = ReasonOption, by: Optional[str] = ByOption,
             wait: float = WaitOption, bootstrap: Optional[str] = BootstrapOption,
             prefix: Optional[str] = PrefixOption) -> None:
    """Roll an experiment back by hand: the champion serves everything, and it is over."""
    steer(experiment, "rollback", reason, by, bootstrap, prefix, wait)


@app.command("pause")
def pause(experiment: str = typer.Argument(..., help="The experiment."),
          reason: str = ReasonOption, by: Optional[str] = ByOption,
          wait: float = WaitOption, bootstrap: Optional[str] = BootstrapOption,
          prefix: Optional[str] = PrefixOption) -> None:
    """Pause an experiment: no traffic change and no automatic decision until resume (its
    statistics keep counting; a manual promote or rollback still applies)."""
    steer(experiment, "pause", reason, by, bootstrap, prefix, wait)


@app.command("resume")
def resume(experiment: str = typer.Argument(..., help="The experiment."),
           reason: str = ReasonOption, by: Optional[str] = ByOption,
           wait: float = WaitOption, bootstrap: Optional[str] = BootstrapOption,
           prefix: Optional[str] = PrefixOption) -> None:
    """Resume a paused experiment: rollguard decides again from its next record."""
    steer(experiment, "resume", reason, by, bootstrap, prefix, wait)


@app.command("dashboard")
def dashboard(
    port: int = typer.Option(8080, help="Port to serve the dashboard on."),
    host: str = typer.Option("127.0.0.1", help="Address to serve it on (0.0.0.0: every "
                             "interface; it has no login, so keep it on a trusted network)."),
    allow_control: bool = typer.Option(
        False, "--allow-control", help="Show promote / rollback / pause / resume buttons; each "
        "press must carry the token (--control-token)."),
    control_token: Optional[str] = typer.Option(
        None, "--control-token", envvar="ROLLGUARD_DASHBOARD_TOKEN",
        help="The token a button press must carry (default: ROLLGUARD_DASHBOARD_TOKEN)."),
    bootstrap: Optional[str] = BootstrapOption,
    prefix: Optional[str] = PrefixOption,
) -> None:
    """A live web dashboard of every experiment, read from the worker's control, stats,
    history and dead-letter topics (docs/dashboard.md); runs until Ctrl-C."""
    from rollguard.dashboard import DashboardError, serve
    from rollguard.streams.topics import TopicNames

    broker = bootstrap_or_default(bootstrap)
    if allow_control and not (control_token or "").strip():
        fail("--allow-control needs a token that every button press must carry: set "
             "ROLLGUARD_DASHBOARD_TOKEN (or --control-token) to a secret of your choice.")

    def ready(url: str) -> None:
        out.print(f"rollguard dashboard on {url} (Kafka {broker}, topic prefix "
                  f"'{TopicNames(prefix).prefix}'); Ctrl-C to stop.", markup=False)

    try:
        serve(broker, prefix, host=host, port=port, on_ready=ready,
              allow_control=allow_control, control_token=control_token)
    except DashboardError as exc:
        fail(str(exc))


# -- preflight: the CI gate before shadow (rollguard/preflight/, docs/preflight.md) ----------
from rollguard.preflight.cli import preflight_app  # noqa: E402

app.add_typer(preflight_app, name="preflight")


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    main()
