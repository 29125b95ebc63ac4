"""Dashboards and alerts may only use metrics that exist; the README lists every one."""

from __future__ import annotations

import json
from typing import Any, get_args

import pytest
import yaml

from sluice.metrics import SPECS, MetricName, metric_of_sample, series_in
from tests.support.paths import ROOT

OBSERVABILITY = ROOT / "deploy" / "observability"


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((OBSERVABILITY / "prometheus-rules.yaml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_closed_set_and_the_specs_agree() -> None:
    assert set(get_args(MetricName)) == set(SPECS)
    assert all(name.startswith("sluice_") for name in SPECS)


def test_every_alert_uses_only_known_metrics() -> None:
    alerts = rules()
    assert {
        "SluiceOutboxOldestRowTooOld",
        "SluiceConsumerLagGrowing",
        "SluiceDeadLetters",
        "SluiceWebhookSignatureFailures",
        "SluiceWebhookWrongEnvironment",
        "SluiceReconcilerCreatingEvents",
        "SluiceAirtableWebhookExpiring",
    } <= {rule["alert"] for rule in alerts}
    for rule in alerts:
        used = series_in(rule["expr"])
        assert used, rule["alert"]
        unknown = {s for s in used if metric_of_sample(s) is None}
        assert not unknown, f"{rule['alert']}: {unknown}"
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]


def test_every_dashboard_panel_uses_only_known_metrics() -> None:
    expressions = dashboard_expressions()
    assert len(expressions) >= 15
    used: set[str] = set()
    for expression in expressions:
        series = series_in(expression)
        assert series, expression
        unknown = {s for s in series if metric_of_sample(s) is None}
        assert not unknown, f"{expression}: {unknown}"
        used |= {metric_of_sample(s) for s in series} - {None}  # type: ignore[arg-type]
    assert used == set(SPECS), f"not on the dashboard: {set(SPECS) - used}"


@pytest.mark.parametrize("sample", ["sluice_relay_published", "sluice_webhooks_rejected_totals"])
def test_a_wrong_name_is_caught(sample: str) -> None:
    assert metric_of_sample(sample) is None


def test_the_readme_lists_every_metric() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, spec in SPECS.items():
        exposed = name + ("_total" if spec.kind == "counter" else "")
        assert f"`{exposed}`" in readme, exposed
