"""Metrics as Prometheus scrapes them: ingest outcomes, consumer counts and lag, reconcile runs."""

from __future__ import annotations

import asyncio
import gc
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from consumers.observe import ConsumerMetrics, ConsumerObserver, partition_lag
from devkit.simulate import signed_square_delivery, square_event
from outbox.topics import ensure_topics
from recovery.run_metrics import RunMetrics, export_run
from recovery.summary import RunSummary
from sluice.db import create_engine
from sluice.settings import Settings
from tests.support.consumers import consumed, fresh_topics, produce, running_consumer
from tests.support.square import SIGNATURE_KEY, WEBHOOK_URL
from tests.support.waiting import eventually

if TYPE_CHECKING:
    from pathlib import Path


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def test_ingest_counts_every_outcome_and_times_acks(ingest_url: str) -> None:
    event = square_event("booking.created")
    body, headers = signed_square_delivery(event, key=SIGNATURE_KEY, url=WEBHOOK_URL)
    async with httpx.AsyncClient(base_url=ingest_url) as http:
        assert (await http.post("/webhooks/square", content=body, headers=headers)).json()[
            "duplicate"
        ] is False
        assert (await http.post("/webhooks/square", content=body, headers=headers)).json()[
            "duplicate"
        ] is True
        forged = {**headers, "x-square-hmacsha256-signature": "bm90IGl0"}
        assert (
            await http.post("/webhooks/square", content=body, headers=forged)
        ).status_code == 401
        unsigned = {"content-type": "application/json"}
        assert (
            await http.post("/webhooks/square", content=body, headers=unsigned)
        ).status_code == 401
        assert (await http.post("/webhooks/airtable", content=b"{}")).status_code == 503
        response = await http.get("/metrics")
    assert response.status_code == 200
    found = samples(response.text)
    assert value(found, "sluice_webhooks_received_total", source="square") == 4
    assert value(found, "sluice_webhooks_accepted_total", source="square") == 1
    assert value(found, "sluice_webhooks_duplicate_total", source="square") == 1
    assert (
        value(found, "sluice_webhooks_rejected_total", source="square", reason="bad_signature") == 1
    )
    rejected = "sluice_webhooks_rejected_total"
    assert value(found, rejected, source="square", reason="missing_signature") == 1
    assert value(found, rejected, source="airtable", reason="not_configured") == 1
    assert value(found, "sluice_webhook_ack_seconds_count", source="square") == 2
    assert value(found, "sluice_webhook_ack_seconds_bucket", source="square", le="10.0") == 2


@pytest.mark.broker
async def test_consumer_counts_and_lag(database_url: str, kafka_bootstrap: str) -> None:
    topics = fresh_topics()
    await ensure_topics(kafka_bootstrap, list(topics), partitions=2)
    # One message per produce call: Tansu (the embedded broker) answers the end offset of a
    # partition as if each record batch were one record, so batched sends would undercount.
    for _ in range(5):
        await produce(kafka_bootstrap, [consumed(square_event("booking.created"), topics)])
    group = f"test-{uuid.uuid4().hex}"

    # Nothing committed yet: the whole topic is lag.
    before = await partition_lag(kafka_bootstrap, group, topics)
    assert sum(before.values()) == 5
    assert {tp.topic for tp in before} == set(topics)

    engine = create_engine(database_url, pool_size=2)
    try:
        async with running_consumer(engine, kafka_bootstrap, topics, group_id=group) as runtime:
            metrics = ConsumerMetrics(runtime, CollectorRegistry())
            observer = ConsumerObserver(
                metrics,
                consumer=runtime.name,
                bootstrap_servers=kafka_bootstrap,
                group_id=group,
                topics=topics,
            )
            await eventually(lambda: runtime.stats.applied == 5, within=15)
            await observer.sample()
            registry = metrics.registry
            name = runtime.name
            assert (
                registry.get_sample_value(
                    "sluice_consumer_processed_total", {"consumer": name, "outcome": "applied"}
                )
                == 5
            )
            assert registry.get_sample_value("sluice_consumer_batches_total", {"consumer": name})
            assert (
                registry.get_sample_value("sluice_consumer_dead_lettered_total", {"consumer": name})
                == 0
            )
            lags = [
                registry.get_sample_value(
                    "sluice_consumer_lag_messages",
                    {"consumer": name, "topic": topic, "partition": str(p)},
                )
                for topic in topics
                for p in (0, 1)
            ]
            assert lags == [0, 0, 0, 0]
    finally:
        await engine.dispose()


def test_a_reconcile_run_becomes_a_text_file(tmp_path: Path, database_url: str) -> None:
    summary = RunSummary("square")
    summary.entity("booking").count("created", 3)
    summary.entity("booking").scanned = 10
    summary.error("booking:bk1", "boom")
    settings = Settings(DATABASE_URL=database_url, SLUICE_METRICS_TEXTFILE_DIR=str(tmp_path))
    path = export_run(settings, summary.finish())
    assert path == tmp_path / "sluice_reconcile_square.prom"
    found = samples(path.read_text())
    records = "sluice_reconcile_last_run_records"
    assert value(found, records, source="square", result="created") == 3
    assert value(found, records, source="square", result="scanned") == 10
    assert value(found, records, source="square", result="errors") == 1
    assert value(found, "sluice_reconcile_last_run_success", source="square") == 0
    assert value(found, "sluice_reconcile_last_run_timestamp_seconds", source="square") > 0


def test_no_destination_writes_nothing(database_url: str) -> None:
    assert export_run(Settings(DATABASE_URL=database_url), RunSummary("square").finish()) is None
    metrics = RunMetrics()
    metrics.record(RunSummary("airtable").finish())
    sample: Any = metrics.registry.get_sample_value(
        "sluice_reconcile_last_run_success", {"source": "airtable"}
    )
    assert sample == 1


async def test_a_lag_probe_cut_off_while_starting_is_closed_all_the_same() -> None:
    # The console's sampler gives each probe a deadline; one that ends it mid-start must not
    # leave a Kafka client behind (pytest makes its ResourceWarning an error at collection).
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # a broker that takes the connection and says nothing
        writer.close()

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(partition_lag(f"127.0.0.1:{port}", "g", ["t"]), 0.5)
        gc.collect()
    finally:
        silent.close()
