"""`sluice square fake-api` and `sluice simulate square`: the dev fake Square, test deliveries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from schemas.square_environment import SquareEnvironment  # noqa: TC001 - typer reads it at run time

if TYPE_CHECKING:
    import httpx

square_app = typer.Typer(no_args_is_help=True, help="Square: the fake API for development.")

DEFAULT_STATE_DIR = Path(".sluice")


@square_app.command("fake-api")
def fake_api(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8091,
) -> None:
    """Run the fake Square API (development and tests only); event search starts disabled."""
    import uvicorn  # noqa: PLC0415

    from devkit.fakes.square import FakeSquare  # noqa: PLC0415
    from devkit.simulate import SIMULATED_LOCATION_ID, SIMULATED_MERCHANT_ID  # noqa: PLC0415

    fake = FakeSquare(merchant_id=SIMULATED_MERCHANT_ID, location_id=SIMULATED_LOCATION_ID)
    uvicorn.run(fake.app, host=host, port=port, access_log=False, log_config=None)


def simulate_square(
    event_type: Annotated[str, typer.Argument(help="booking.created, booking.updated, ...")],
    url: Annotated[str | None, typer.Option(help="Target URL (default: the running dev)")] = None,
    key: Annotated[str | None, typer.Option(help="Signature key (default: the dev key)")] = None,
    repeat: Annotated[int, typer.Option(min=1, help="Send the same delivery N times")] = 1,
    entity_id: Annotated[str | None, typer.Option(help="Booking or customer id")] = None,
    version: Annotated[int, typer.Option(min=1)] = 1,
    environment: Annotated[
        SquareEnvironment | None,
        typer.Option(help="Square environment it is from (default: the dev's, else production)"),
    ] = None,
    lost: Annotated[
        bool,
        typer.Option(
            "--lost",
            help="Record the event in the dev's fake Square but never deliver it, as when "
            "Square gives up on a delivery; `sluice reconcile square` finds it",
        ),
    ] = False,
    state_dir: Annotated[Path, typer.Option(envvar="SLUICE_STATE_DIR")] = DEFAULT_STATE_DIR,
) -> None:
    """Post a realistic, signed Square event to a running sluice (like `stripe trigger`). With
    the dev's fake Square running, the event is first recorded there, as having happened."""
    import httpx  # noqa: PLC0415

    from devkit.dev import read_dev_info  # noqa: PLC0415
    from devkit.simulate import square_event  # noqa: PLC0415
    from schemas.square import EVENT_TYPES  # noqa: PLC0415

    if event_type not in EVENT_TYPES:
        raise typer.BadParameter(f"choose one of {', '.join(EVENT_TYPES)}")
    info = read_dev_info(state_dir)
    fake_url = info.get("square_fake_api_url")
    if lost and not fake_url:
        raise typer.BadParameter(
            "--lost records the event in the dev's fake Square, and no running `sluice dev` "
            "with a fake Square was found (it runs one when SQUARE_API_URL is not set)"
        )
    target = url or info.get("square_webhook_url")
    signing_key = key or info.get("square_signature_key")
    if not lost and (not target or not signing_key):
        raise typer.BadParameter("no running `sluice dev` found: pass --url and --key")
    event = square_event(event_type, entity_id=entity_id, version=version)
    with httpx.Client(timeout=15) as client:
        if fake_url:
            _record_in_fake(client, str(fake_url), event)
        if lost:
            typer.echo(
                f"sluice: {event_type} {event['event_id']} is at Square but was never delivered "
                "(as when Square's retries run out); `sluice reconcile square` recovers it",
                err=True,
            )
            return
        _deliver(
            client,
            event,
            target=str(target),
            key=str(signing_key),
            repeat=repeat,
            environment=environment or info.get("square_environment") or "production",
        )


def _record_in_fake(client: httpx.Client, fake_url: str, event: dict[str, Any]) -> None:
    response = client.post(f"{fake_url}/_fake/events", json=event)
    typer.echo(
        json.dumps(
            {
                "recorded_in_fake_square": response.status_code,
                "type": event["type"],
                "event_id": event["event_id"],
                "entity_id": event["data"]["object"][event["data"]["type"]]["id"],
            }
        )
    )
    if response.status_code >= 300:
        typer.echo(f"sluice: the fake Square refused the event: {response.text}", err=True)
        raise typer.Exit(1)


def _deliver(
    client: httpx.Client,
    event: dict[str, Any],
    *,
    target: str,
    key: str,
    repeat: int,
    environment: SquareEnvironment,
) -> None:
    from devkit.simulate import signed_square_delivery  # noqa: PLC0415

    # As the target's Square would send it: a deployment refuses the other environment's events.
    body, headers = signed_square_delivery(event, key=key, url=target, environment=environment)
    failed = False
    for attempt in range(repeat):
        response = client.post(target, content=body, headers=headers)
        failed |= response.status_code >= 300
        typer.echo(
            json.dumps(
                {
                    "attempt": attempt + 1,
                    "status": response.status_code,
                    "response": _json_or_text(response),
                }
            )
        )
    if failed:
        raise typer.Exit(1)


def _json_or_text(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return response.text
