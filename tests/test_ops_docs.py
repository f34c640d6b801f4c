"""The Grafana dashboard and the operations guide match the code (no Ray)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ray_realtime.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
METRICS = ROOT / "ray_realtime" / "actors" / "metrics.py"


def _exported_names() -> set[str]:
    """What Ray exports for each instrument the service makes: ``ray_`` plus
    the name, ``_total`` for a counter, the three series of a histogram."""
    source = METRICS.read_text()
    names: set[str] = set()
    for kind, name in re.findall(r'(Counter|Gauge|hist)\(\s*"(realtime_\w+)"', source):
        full = f"ray_{name}"
        if kind == "Counter":
            names.add(full + "_total")
        elif kind == "hist":
            names.update(full + s for s in ("_bucket", "_count", "_sum"))
        else:
            names.add(full)
    return names


def test_every_dashboard_query_names_a_metric_the_service_exports() -> None:
    exported = _exported_names()
    assert len(exported) == 26  # 2 gauges, 12 counters, 4 histograms of 3 series
    dashboard = json.loads((ROOT / "docs" / "grafana_dashboard.json").read_text())
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used.update(re.findall(r"ray_realtime_\w+", target["expr"]))
    assert used and used <= exported, used - exported
    # Every instrument has a panel.
    bases = {re.sub(r"_(bucket|count|sum|total)$", "", n) for n in exported}
    assert bases == {re.sub(r"_(bucket|count|sum|total)$", "", n) for n in used}


def test_the_guide_covers_every_operator_command_and_flag() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for text in (
        "ray-realtime status --json",
        "ray-realtime status --watch",
        "ray-realtime drain",
        "ray-realtime undrain",
        "--log-format json",
        "--metrics-export-port",
        "grafana_dashboard.json",
        "session recovery",
    ):
        assert text in guide, text
    for command in ("status", "drain", "undrain"):
        assert f"`ray-realtime {command}" in readme, command
    assert "docs/operations.md" in readme
    parser = build_parser()
    assert parser.parse_args(["drain", "abc", "--timeout", "5"]).timeout == 5.0
