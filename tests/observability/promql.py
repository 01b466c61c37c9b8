"""What the observability tests need to know about PromQL text: Grafana's variables, the
threshold of an alert expression, the metric names an expression reads. Parsing proper is
Prometheus's job (its HTTP API answers `bad_data` for anything it cannot parse)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tools.dashboards import substitute

__all__ = ["Threshold", "family", "metric_names", "split_threshold", "substitute"]

COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
FUNCTIONS_AND_KEYWORDS = frozenset({
    "sum", "min", "max", "avg", "count", "by", "without", "on", "ignoring", "group_left",
    "group_right", "bool", "and", "or", "unless", "offset", "rate", "irate", "increase",
    "histogram_quantile", "label_values", "vector", "absent", "humanize", "le",
})
METRIC = re.compile(r"(?<![\w\"{.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=\{|\[|\)|$|\s)")


@dataclass(frozen=True)
class Threshold:
    lhs: str
    op: str
    rhs: str


def split_threshold(expr: str) -> Threshold | None:
    """`<expression> <comparison> <number>` at the top level (outside any parentheses,
    braces, brackets or strings) into its parts; None when there is no such comparison."""
    depth = 0
    quote: str | None = None
    last: tuple[int, str] | None = None
    i = 0
    while i < len(expr):
        ch = expr[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            for op in COMPARISONS:
                if expr.startswith(op, i) and not expr.startswith("=~", i) \
                        and not expr.startswith("!~", i):
                    last = (i, op)
                    i += len(op) - 1
                    break
        i += 1
    if last is None:
        return None
    pos, op = last
    rhs = expr[pos + len(op):].strip()
    rhs = rhs.removeprefix("bool").strip()
    if not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?(e-?[0-9]+)?", rhs):
        return None
    return Threshold(expr[:pos].strip(), op, rhs)


def metric_names(expr: str) -> set[str]:
    """Metric names read by an expression (identifiers before a selector, a range or the
    end of an argument that are not functions, keywords or label names)."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    without_groupings = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)",
                               r"\1", without_strings)
    without_selectors = re.sub(r"\{[^}]*\}", "{}", without_groupings)
    without_ranges = re.sub(r"\[[^\]]*\]", "[]", without_selectors)
    names = set(METRIC.findall(without_ranges))
    return {n for n in names if n not in FUNCTIONS_AND_KEYWORDS
            and not re.fullmatch(r"[0-9.e]+", n)}


def family(name: str) -> str:
    """The metric family of a sample name (what /api/v1/metadata is keyed by)."""
    for suffix in ("_bucket", "_count", "_sum", "_total", "_created"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name
