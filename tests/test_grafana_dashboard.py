"""deployments/grafana/cascade.json is a well-formed Grafana dashboard; every series its PromQL reads is one
the code exports (names and labels), and every metric the code defines has a panel.

The metrics are read from the code itself: each ``Counter`` / ``Gauge`` / ``Histogram`` of Ray's metrics API
built in ``deployments/`` with a literal name and ``tag_keys``. Ray 2.60 exports them (measured on its
Prometheus endpoint) with a ``ray_`` prefix, ``_total`` on a counter whose name lacks it, ``_bucket`` /
``_sum`` / ``_count`` on a histogram, and Serve's tags ``application`` / ``deployment`` / ``replica``.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "deployments" / "grafana"
DASHBOARD = GRAFANA / "cascade.json"
METRIC_KINDS = ("Counter", "Gauge", "Histogram")
SERVE_LABELS = {"application", "deployment", "replica"}  # Serve's tags on every replica's metrics
RAY_LABELS = {"Component", "NodeAddress", "SessionName", "Version", "WorkerId"}  # Ray's own on every series
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
                "unless"}
Metrics = dict[str, tuple[str, tuple[str, ...]]]  # name -> (kind, tag keys)


def metric_sources() -> dict[str, str]:
    """Source text of each module in deployments/ that uses Ray's metrics API."""
    return {path.name: path.read_text() for path in sorted((ROOT / "deployments").glob("*.py"))
            if re.search(r"ray\.(serve|util)\.metrics", path.read_text())}


def defined_metrics(sources: dict[str, str]) -> Metrics:
    """Every metric built with a literal name in ``sources``."""
    metrics: Metrics = {}
    for source in sources.values():
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Call):
                continue
            kind = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if kind in METRIC_KINDS and node.args and isinstance(node.args[0], ast.Constant):
                tag_keys = next((ast.literal_eval(k.value) for k in node.keywords if k.arg == "tag_keys"), ())
                metrics[node.args[0].value] = (kind, tuple(tag_keys))
    return metrics


def exported_series(metrics: Metrics) -> dict[str, set[str]]:
    """Each series Ray exports for ``metrics``, with the labels it carries."""
    series: dict[str, set[str]] = {}
    for name, (kind, tag_keys) in metrics.items():
        labels = set(tag_keys) | SERVE_LABELS | RAY_LABELS
        if kind == "Counter":
            series[f"ray_{name}" if name.endswith("_total") else f"ray_{name}_total"] = labels
        elif kind == "Gauge":
            series[f"ray_{name}"] = labels
        else:
            series |= {f"ray_{name}_bucket": labels | {"le"}, f"ray_{name}_sum": labels, f"ray_{name}_count": labels}
    return series


def series_names(expr: str) -> set[str]:
    """The series an expression (PromQL, or a ``label_values(...)`` variable query) reads."""
    text = re.sub(r'"[^"]*"', '""', expr)  # label values and variables
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    if text.lstrip().startswith("label_values("):
        text = text.rsplit(",", 1)[0]  # its last argument is a label
    return {word for word in re.findall(r"(?<![\w.])([A-Za-z_:][\w:]*)\b(?!\s*\()", text)
            if word not in PROMQL_WORDS}


def labels_used(expr: str) -> set[str]:
    """Labels an expression matches on or groups by (and, for ``label_values``, the label it lists)."""
    text = re.sub(r'"[^"]*"', '""', expr)
    used = {label for matchers in re.findall(r"\{([^}]*)\}", text)
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers)}
    for grouping in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text):
        used |= {label.strip() for label in grouping.split(",") if label.strip()}
    listed = re.fullmatch(r"\s*label_values\(.*,\s*(\w+)\s*\)\s*", text)
    return used | ({listed.group(1)} if listed else set())


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(where, PromQL or variable query, legend) for every target and every query variable."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"], target.get("legendFormat", "")
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield f"variable {variable['name']!r}", query["query"] if isinstance(query, dict) else query, ""


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def series() -> dict[str, set[str]]:
    return exported_series(defined_metrics(metric_sources()))


def test_the_code_defines_the_metrics_this_test_reads() -> None:
    metrics = defined_metrics(metric_sources())
    assert {"cascade_requests_total", "cascade_latency_ms", "cascade_monitor_evidence"} <= set(metrics)
    assert metrics["cascade_latency_ms"][0] == "Histogram" and "tier" in metrics["cascade_latency_ms"][1]


def test_it_is_a_dashboard_grafana_imports(dashboard: dict[str, Any]) -> None:
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"]) and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard.get("id") is None  # an import creates its own
    uids = [json.loads(path.read_text())["uid"] for path in GRAFANA.glob("*.json")]
    assert len(uids) == len(set(uids))


def test_panel_ids_are_unique_and_every_panel_has_a_place(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in panels(dashboard):
        place = panel["gridPos"]
        assert all(isinstance(place[key], int) for key in "xywh"), panel["title"]
        assert place["x"] >= 0 and place["y"] >= 0 and place["w"] >= 1 and place["h"] >= 1, panel["title"]
        assert place["x"] + place["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(place["x"], place["x"] + place["w"])
                 for y in range(place["y"], place["y"] + place["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_every_panel_queries_the_chosen_prometheus(dashboard: dict[str, Any]) -> None:
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    source = {"type": "prometheus", "uid": "${datasource}"}
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == source and panel["targets"], panel["title"]
        assert all(target["datasource"] == source and target["expr"] for target in panel["targets"]), panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_the_application_variable_lists_the_apps_that_answer_requests(dashboard: dict[str, Any]) -> None:
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["application"]["query"]["query"] == "label_values(ray_cascade_requests_total, application)"


def test_every_variable_a_query_uses_is_defined(dashboard: dict[str, Any]) -> None:
    defined = {variable["name"] for variable in dashboard["templating"]["list"]} | BUILTIN_VARIABLES
    for where, expr, _ in queries(dashboard):
        used = set(re.findall(r"\$\{?(\w+)", expr))
        assert used <= defined, f"{where}: {used - defined}"


def test_every_series_a_query_reads_is_one_the_code_exports(
        dashboard: dict[str, Any], series: dict[str, set[str]]) -> None:
    for where, expr, _ in queries(dashboard):
        assert series_names(expr), f"{where}: no series in {expr}"
        unknown = series_names(expr) - set(series)
        assert not unknown, f"{where}: {sorted(unknown)} not exported (defined: {sorted(series)})"


def test_every_label_a_query_or_legend_uses_is_on_its_series(
        dashboard: dict[str, Any], series: dict[str, set[str]]) -> None:
    for where, expr, legend in queries(dashboard):
        labels = set.intersection(*(series[name] for name in series_names(expr)))
        used = labels_used(expr) | set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        assert used <= labels, f"{where}: {sorted(used - labels)} not labels of {sorted(series_names(expr))}"


def test_every_metric_the_code_defines_has_a_panel(dashboard: dict[str, Any]) -> None:
    read = {name for panel in panels(dashboard) for target in panel.get("targets", [])
            for name in series_names(target["expr"])}
    for name, (kind, tag_keys) in defined_metrics(metric_sources()).items():
        assert set(exported_series({name: (kind, tag_keys)})) & read, f"no panel shows {name}"


def test_a_renamed_metric_fails_the_check(dashboard: dict[str, Any]) -> None:
    sources = {name: text.replace('"cascade_deferrals_total"', '"cascade_deferred_samples_total"')
               for name, text in metric_sources().items()}
    renamed = exported_series(defined_metrics(sources))
    read = {name for _, expr, _ in queries(dashboard) for name in series_names(expr)}
    assert read - set(renamed) == {"ray_cascade_deferrals_total"}
    assert "ray_cascade_deferred_samples_total" not in read
