"""`sluice doctor`: check a deployment's settings and reachability before trusting it."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

from commands.context import lenient_settings


def doctor(
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds each check may take before it fails")
    ] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """Check the database and its migrations, Kafka and every topic, the providers' signature
    settings and tokens, the Airtable webhooks, the admin and API tokens, and placeholder
    secrets: one line per verdict (ok, warn, fail) with how to fix it. Exit 1 if any fails."""
    from recovery.doctor import CHECKS, fail, failed, run_checks  # noqa: PLC0415
    from sluice.logging import configure_logging  # noqa: PLC0415

    settings, errors = lenient_settings()
    findings = [fail(e.setting, e.problem, e.fix) for e in errors]
    if settings is not None:
        configure_logging(settings.log_format, "error")  # the verdicts are the output
        invalid = {e.setting for e in errors}  # reported above; their defaults are not news
        checked = asyncio.run(run_checks(settings, CHECKS, timeout=timeout))
        findings += [f for f in checked if f.what not in invalid]
    for finding in findings:
        typer.echo(json.dumps(finding.as_json()) if as_json else finding.line())
    if failed(findings):
        raise typer.Exit(1)
