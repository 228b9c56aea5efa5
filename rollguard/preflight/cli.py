"""``rollguard preflight PREFLIGHT.yaml`` and ``rollguard preflight constraints infer``.

Exit codes: 0 when every check passes, 1 when one fails, 2 when the inputs are unusable
(one sentence saying which and why, on standard error).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

__all__ = ["preflight_app"]

HELP = {"help_option_names": ["-h", "--help"]}


class _RunByDefault(TyperGroup):
    """``rollguard preflight FILE`` means ``rollguard preflight run FILE``."""

    def parse_args(self, ctx, args):  # type: ignore[no-untyped-def]
        if args and args[0] not in self.commands and args[0] not in HELP["help_option_names"]:
            args = ["run", *args]
        return super().parse_args(ctx, args)


preflight_app = typer.Typer(
    cls=_RunByDefault, no_args_is_help=True, context_settings=HELP,
    help="The CI gate before shadow: `rollguard preflight PREFLIGHT.yaml` checks a candidate "
         "(data, quality, edge cases, latency) and exits 0 (pass), 1 (a check failed) or 2 "
         "(unusable inputs); docs/preflight.md.")
constraints_app = typer.Typer(no_args_is_help=True, context_settings=HELP,
                              help="The data constraints file preflight verifies.")
preflight_app.add_typer(constraints_app, name="constraints")


def _consoles():
    from rich.console import Console

    return (Console(highlight=False, soft_wrap=True),
            Console(stderr=True, highlight=False, soft_wrap=True))


def _unusable(err, message: str) -> None:
    from rich.markup import escape

    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(2)


@preflight_app.command("run")
def run(
    preflight_file: Path = typer.Argument(..., metavar="PREFLIGHT.yaml",
                                          help="The preflight file (docs/preflight.md)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the JSON report here "
                                            "('-': standard output, instead of the text)."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write the self-contained "
                                            "HTML report here."),
    register: bool = typer.Option(False, "--register", help="On a pass, point the registry "
                                  "alias (register.alias, default candidate) at the candidate, "
                                  "with the report attached."),
    bootstrap: Optional[str] = typer.Option(
        None, "--bootstrap-servers", "-b", envvar="KAFKA_BOOTSTRAP_SERVERS",
        help="Kafka, when the file reads the production window or live figures from it "
             "(default: the file's kafka.bootstrap_servers, else 127.0.0.1:9092)."),
    prefix: Optional[str] = typer.Option(
        None, "--topic-prefix", envvar="ROLLGUARD_TOPIC_PREFIX",
        help="Prefix of the topics (default: the file's kafka.topic_prefix, else 'rollguard.')."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines on stderr."),
) -> None:
    """Run every check of PREFLIGHT.yaml: exit 0 when all pass, 1 when one fails, 2 when the
    inputs are unusable."""
    from rollguard.preflight.config import PreflightInputError, load_config
    from rollguard.preflight.report import print_report
    from rollguard.preflight.runner import run_preflight

    out, err = _consoles()

    def progress(line: str) -> None:
        if not quiet:
            from rich.markup import escape

            err.print(f"[dim]preflight: {escape(line)}…[/dim]", highlight=False)

    try:
        config = load_config(preflight_file)
        report = run_preflight(config, bootstrap=bootstrap, topic_prefix=prefix,
                               register=register, progress=progress)
    except PreflightInputError as bad:
        _unusable(err, str(bad))
    try:
        if html_out is not None:
            html_out.parent.mkdir(parents=True, exist_ok=True)
            html_out.write_text(report.to_html(), encoding="utf-8")
        if json_out is not None and str(json_out) != "-":
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(report.to_json(), encoding="utf-8")
    except OSError as bad:
        _unusable(err, f"The report cannot be written ({bad.strerror}: {bad.filename}): give "
                       "a path in a directory you can write to.")
    if json_out is not None and str(json_out) == "-":
        sys.stdout.write(report.to_json())
    else:
        print_report(out, report)
        for path, what in ((json_out, "JSON"), (html_out, "HTML")):
            if path is not None:
                out.print(f"{what} report: {path}", highlight=False)
    raise typer.Exit(report.exit_code)


@constraints_app.command("infer")
def infer(
    source: Path = typer.Argument(..., metavar="PREFLIGHT.yaml|TRAIN",
                                  help="A preflight file (its train, target and feature keys), "
                                       "or a CSV, Parquet or JSONL training set."),
    out_path: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the constraints "
                                            "here (default: standard output)."),
    target: Optional[str] = typer.Option(None, help="With a training set: its label column, "
                                         "left out of the constraints."),
    categorical: list[str] = typer.Option([], "--categorical", help="With a training set: a "
                                          "numeric column to treat as categories (repeat)."),
    ignore: list[str] = typer.Option([], "--ignore", help="With a training set: a column to "
                                     "leave out (repeat)."),
) -> None:
    """Infer the constraints the training set satisfies (types, nulls, ranges, allowed values,
    lengths, uniqueness) and write them as YAML to review and edit."""
    from rollguard.preflight.config import PreflightInputError, load_config
    from rollguard.preflight.constraints import dump_constraints, infer_constraints
    from rollguard.preflight.data import infer_schema, read_table

    out, err = _consoles()
    try:
        if source.suffix.lower() in (".yaml", ".yml"):
            config = load_config(source)
            train = read_table(config.train, "training")
            schema = infer_schema(train, config.target, config.features, config.ignore,
                                  config.categorical)
        else:
            train = read_table(source, "training")
            schema = infer_schema(train, target, None, ignore, categorical)
        shown = train.source
        if out_path is not None:
            relative = os.path.relpath(train.source, start=out_path.resolve().parent)
            shown = relative if not relative.startswith("..") else train.source
        text = dump_constraints(infer_constraints(train.rows, schema), shown, len(train.rows))
    except PreflightInputError as bad:
        _unusable(err, str(bad))
    if out_path is None:
        sys.stdout.write(text)
        return
    try:
        out_path.write_text(text, encoding="utf-8")
    except OSError as bad:
        _unusable(err, f"{out_path} cannot be written ({bad.strerror}): give a path in a "
                       "directory you can write to.")
    count = text.count("\n  - ")
    out.print(f"Wrote {count} constraints on {len(schema)} features to {out_path}: review and "
              "edit them, then name the file in the preflight file (constraints:).",
              highlight=False)
