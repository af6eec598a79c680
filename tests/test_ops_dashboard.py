"""deploy/grafana: the dashboard's structure (importable JSON, a Prometheus datasource variable, the
user/tenant/model variables applied to every query, the panels the issue asks for) and the
provisioning files. Whether its PromQL runs is tested against a real Prometheus in
test_ops_prometheus.py."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from test_ops_common import (
    DEPLOY,
    ROOT,
    dashboard_panels,
    dashboard_queries,
    exported_series_names,
    load_dashboard,
    template_variables,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
FILTERS = ('user_id=~"$user"', 'tenant_id=~"$tenant"', 'openai_image_model=~"$model"')
_SELECTOR = re.compile(r"(?P<metric>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<matchers>[^}]*)\}")


def test_dashboard_is_importable_json() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "otel-image-cost"
    assert dashboard["title"] == "OpenAI image cost"
    assert isinstance(dashboard["schemaVersion"], int)
    assert "id" not in dashboard or dashboard["id"] is None  # no instance-specific id: import anywhere
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_template_variables() -> None:
    variables = template_variables()
    assert list(variables) == ["datasource", "tenant", "user", "model"]
    datasource = variables["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    queries = {
        "tenant": "label_values(openai_image_cost_USD_total, tenant_id)",
        "user": 'label_values(openai_image_cost_USD_total{tenant_id=~"$tenant"}, user_id)',
        "model": "label_values(openai_image_cost_USD_total, openai_image_model)",
    }
    for name, query in queries.items():
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == DATASOURCE
        assert variable["definition"] == query
        assert variable["query"]["query"] == query
        assert variable["multi"] and variable["includeAll"]
        assert variable["allValue"] == ".*"  # also matches series without the label


def test_every_panel_and_target_uses_the_datasource_variable() -> None:
    panels = dashboard_panels()
    assert len(panels) >= 20
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_panels_fit_the_grid_without_overlapping() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in load_dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_the_variables_filter_every_raw_metric_selector() -> None:
    raw = exported_series_names()
    for title, expr in dashboard_queries():
        selectors = [m for m in _SELECTOR.finditer(expr) if m["metric"] in raw]
        recorded = [m for m in _SELECTOR.finditer(expr) if ":" in m["metric"]]
        assert selectors or recorded, title
        for selector in selectors:
            for matcher in FILTERS:
                assert matcher in selector["matchers"], f"{title}: {selector[0]} lacks {matcher}"
        for selector in recorded:
            assert 'user_id=~"$user"' in selector["matchers"] or "tenant_id" in selector["matchers"], title


def test_semconv_histograms_are_scoped_to_image_calls() -> None:
    """Other GenAI instrumentations record gen_ai.client.* too; the plugin's points carry
    openai.image.operation."""
    for title, expr in dashboard_queries():
        for selector in _SELECTOR.finditer(expr):
            if selector["metric"].startswith("gen_ai_client_"):
                assert 'openai_image_operation!=""' in selector["matchers"], title


@pytest.mark.parametrize(
    ("topic", "title_pattern", "metric"),
    [
        ("spend over time per user", r"^Spend rate per user", "openai_image_cost_USD_total"),
        ("spend over time per tenant", r"^Spend rate per tenant", "openai_image_cost_USD_total"),
        ("top spenders", r"^Top spenders", "openai_image_cost_USD_total"),
        ("spend per model", r"^Spend rate per model", "openai_image_cost_USD_total"),
        ("spend per quality", r"^Spend by quality", "openai_image_cost_USD_total"),
        ("spend per size", r"^Spend by size", "openai_image_cost_USD_total"),
        ("images", r"^Images per minute", "openai_image_generated_total"),
        ("partial images", r"^Images per minute", "openai_image_partial_images_total"),
        ("tokens by type", r"^Tokens per minute by type", "gen_ai_client_token_usage_sum"),
        ("cost per image", r"^Cost per image by model", "openai_image_generated_total"),
        ("unpriced calls", r"^Unpriced calls", "openai_image_unpriced_total"),
        ("latency", r"^Latency", "gen_ai_client_operation_duration_seconds_bucket"),
        ("budget", r"^Daily budget used", "user_id:openai_image_cost_budget_USD:24h"),
    ],
)
def test_the_issue_s_panels_are_there(topic: str, title_pattern: str, metric: str) -> None:
    matching = [expr for title, expr in dashboard_queries() if re.search(title_pattern, title)]
    assert matching, topic
    assert any(metric in expr for expr in matching), topic


def test_grafana_datasource_provisioning() -> None:
    provisioning: dict[str, Any] = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert provisioning["apiVersion"] == 1
    [datasource] = provisioning["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["access"] == "proxy"
    assert datasource["url"] == "${PROMETHEUS_URL}"
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["global"][
        "scrape_interval"
    ]
    assert datasource["jsonData"]["timeInterval"] == scrape


def test_grafana_dashboard_provisioning_points_where_the_docs_mount_the_dashboard() -> None:
    provisioning: dict[str, Any] = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "otel-image-cost.yml").read_text()
    )
    assert provisioning["apiVersion"] == 1
    [provider] = provisioning["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    docs = (ROOT / "docs" / "ops.md").read_text()
    assert f"{path}/otel-image-cost.json" in docs
