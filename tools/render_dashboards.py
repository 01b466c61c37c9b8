"""Render the shipped Grafana dashboards from a Prometheus to PNG files, one image per
dashboard with every panel, so that a reviewer can see them without Grafana.

    .venv/bin/python tools/render_dashboards.py --prometheus http://127.0.0.1:9090 \
        [--since 15m] [--var namespace=salons] [--out test-artifacts/dashboards]

Each panel's targets are queried with /api/v1/query_range over the last `--since`, Grafana's
variables substituted as in tools.dashboards.substitute (template variables default to All).
Time series panels are drawn as lines (stacked when the panel stacks), stat panels as their
last value. The output directory is git-ignored (test-artifacts/).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tools.dashboards import DASHBOARD_DIR, iter_panels, substitute  # noqa: E402

DEFAULT_OUT = REPO / "test-artifacts" / "dashboards"
COLUMNS = 3
UNITS = {"s": "seconds", "ops": "per second", "reqps": "requests/s", "short": ""}


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def query_range(prometheus: str, expr: str, start: float, end: float,
                step: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{params}",
                                timeout=30) as resp:
        body = json.loads(resp.read())
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body.get('error')}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def legend(fmt: str, labels: dict[str, str]) -> str:
    """Grafana's legend format (`{{label}}`), or the labels when there is none."""
    if not fmt:
        return json.dumps(labels) if labels else "value"
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)
    return text.strip() or "(no labels)"


def render_dashboard(dashboard: dict[str, Any], prometheus: str, out: Path, *, since: float,
                     step: float, rate_interval: str, variables: dict[str, str]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    panels = list(iter_panels(dashboard))
    rows = math.ceil(len(panels) / COLUMNS)
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(6 * COLUMNS, 3.4 * rows), squeeze=False)
    end = time.time()
    start = end - since
    for ax, panel in zip(axes.flat, panels, strict=False):
        unit = (panel.get("fieldConfig", {}).get("defaults", {}).get("unit")) or "short"
        stacked = (panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
                   .get("stacking", {}).get("mode")) == "normal"
        series: list[tuple[str, list[datetime], list[float]]] = []
        for target in panel["targets"]:
            expr = substitute(target["expr"], rate_interval, **variables)
            for item in query_range(prometheus, expr, start, end, step):
                points = [(datetime.fromtimestamp(float(t)), float(v))
                          for t, v in item["values"] if math.isfinite(float(v))]
                if points:  # a quantile without observations in its window is NaN
                    series.append((legend(target.get("legendFormat", ""), item["metric"]),
                                   [x for x, _ in points], [y for _, y in points]))
        ax.set_title(panel["title"], fontsize=10, loc="left")
        if not series:
            ax.text(0.5, 0.5, panel.get("options", {}).get("noValue")
                    or panel.get("fieldConfig", {}).get("defaults", {}).get("noValue")
                    or "No data", ha="center", va="center", transform=ax.transAxes,
                    fontsize=14, color="grey")
        elif panel["type"] == "stat":
            ax.axis("off")
            text = "\n".join(f"{name}: {ys[-1]:g}" for name, _, ys in series)
            ax.text(0.5, 0.5, text, ha="center", va="center",
                    transform=ax.transAxes, fontsize=16 if len(series) < 3 else 11)
        else:
            if stacked:
                bottom: dict[datetime, float] = {}
                for name, xs, ys in series:
                    base = [bottom.get(x, 0.0) for x in xs]
                    top = [b + y for b, y in zip(base, ys, strict=True)]
                    ax.fill_between(xs, base, top, alpha=0.4, label=name, step="post")
                    bottom.update(zip(xs, top, strict=True))
            else:
                for name, xs, ys in series:
                    ax.plot(xs, ys, linewidth=1.2, label=name)
            ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
            ax.tick_params(labelsize=7)
            ax.set_ylabel(UNITS.get(unit, unit), fontsize=8)
            ax.grid(alpha=0.3)
            if len(series) <= 12:
                ax.legend(fontsize=6, loc="upper left")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{dashboard['title']}  (last {int(since)} s, from {prometheus})",
                 fontsize=13)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{dashboard['uid']}.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prometheus", required=True, help="base URL of the Prometheus")
    parser.add_argument("--since", type=parse_duration, default=parse_duration("15m"),
                        help="time range ending now (default 15m)")
    parser.add_argument("--step", type=parse_duration, default=None,
                        help="resolution (default: range / 200)")
    parser.add_argument("--rate-interval", default="1m",
                        help="value of $__rate_interval (default 1m)")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                        help="a template variable (default: All)")
    parser.add_argument("--dashboards", type=Path, default=DASHBOARD_DIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    variables = dict(v.split("=", 1) for v in args.var)
    step = args.step or max(args.since / 200, 1.0)
    for path in sorted(args.dashboards.glob("*.json")):
        dashboard = json.loads(path.read_text())
        png = render_dashboard(dashboard, args.prometheus.rstrip("/"), args.out,
                               since=args.since, step=step, rate_interval=args.rate_interval,
                               variables=variables)
        print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
