"""What a backtest shows a person: its table, its notes and its HTML page (no I/O).

Everything here reads a :class:`mlops.trading.backtest.Comparison` (the three simulations
of one window, their figures and rules), so ``mlops backtest`` and any other replay of the
strategy (a walk-forward) render the same table and page.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from datetime import date
from typing import TYPE_CHECKING

import numpy as np

from mlops.trading import performance

if TYPE_CHECKING:
    from mlops.trading.backtest import Comparison
    from mlops.trading.simulation import Rules

COLUMNS = ("model", "naive", "buy_and_hold")
WIDTH, HEIGHT, PAD = 900, 360, 50
COLORS = ("#1f77b4", "#7f7f7f", "#d62728")
EXTRA_COLORS = ("#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")  # more lines (walk-forward models)
SHADE = "#f6e7c1"  # the in-sample sessions


# The forecasts against the threshold (:meth:`mlops.trading.simulation.Reach.figures`;
# none for buy-and-hold): (key, label, format) of each row.
FORECAST_ROWS: list[tuple[str, str, str]] = [
    ("sessions_past_threshold", "sessions with a forecast at or past the threshold", "count"),
    ("largest_expected_change", "largest expected change forecast", "change"),
]


def names(label: str) -> dict[str, str]:
    """Each simulation's column title."""
    return {"model": f"model {label}", "naive": "naive forecast", "buy_and_hold": "buy-and-hold"}


def in_sample_sessions(days: Sequence[date], trained_through: date | None) -> int:
    """How many of ``days`` the model saw in training (on or before its last training day)."""
    return 0 if trained_through is None else sum(d <= trained_through for d in days)


def table(
    figures: dict[str, dict[str, float | None]], label: str, in_sample: int = 0
) -> list[dict[str, str]]:
    """The figures as rows: one per figure, one column per simulation.

    Annualised figures of a window under :data:`performance.SHORT_WINDOW` sessions are
    flagged in their label; the last row counts the model's sessions in sample.
    """
    titles = names(label)
    sessions = int(figures["model"].get("sessions") or 0)
    rows = [
        {
            "figure": performance.flagged(title, key, sessions),
            **{titles[c]: performance.cell(figures[c], key, kind) for c in COLUMNS},
        }
        for key, title, kind in performance.FIGURES
    ]
    for key, title, kind in FORECAST_ROWS:
        rows.append(
            {
                "figure": title,
                **{titles[c]: performance.cell(figures[c], key, kind) for c in COLUMNS},
            }
        )
    rows.append(
        {
            "figure": "sessions in sample (seen by the model in training)",
            titles["model"]: f"{in_sample} of {sessions}",
            titles["naive"]: "-",
            titles["buy_and_hold"]: "-",
        }
    )
    return rows


def conditions(rules: Rules, probability: bool = False) -> str:
    """The rule, the costs, the fills and the risk-free rate every figure assumes
    (``probability``: the model is a direction classifier, traded on its probability)."""
    costs = rules.costs
    level = (
        f"a probability threshold of {rules.probability_threshold:.3f}"
        if probability
        else f"a threshold of {rules.threshold:.3%}"
    )
    fills = "fills at the next session's open"
    if rules.order_type == "limit":
        reach = "at its open only" if rules.time_in_force == "opg" else "within its range"
        fills = (
            f"limit orders {rules.limit_buffer_bps:g} bp past the decision's close, filled "
            f"by the next session {reach} (a limit not reached does not fill)"
        )
    return (
        f"Rule: {rules.rule} at {level}, sell {rules.sell}. "
        f"Costs: {costs.slippage_bps:g} bp slippage and {costs.commission_per_share:g} per "
        f"share; {fills}; risk-free rate {performance.RISK_FREE_RATE:g}."
    )


def notes(comparison: Comparison, trained_through: date | None = None) -> list[str]:
    """What the reader must know before trusting the figures: sessions in sample, a short
    window, forecasts that never reach the threshold (the rule, the costs and the
    risk-free rate are :func:`conditions`)."""
    days = comparison.market.days
    found = []
    in_sample = in_sample_sessions(days, trained_through)
    if in_sample:
        found.append(
            f"{in_sample} of {len(days)} sessions in sample: the model was trained on data "
            f"up to {trained_through}, so its figures over them are not a forecast."
        )
    if len(days) < performance.SHORT_WINDOW:
        found.append(
            f"{len(days)} sessions, under {performance.SHORT_WINDOW}: the annualised figures "
            "(CAGR, volatility, Sharpe and its interval, Sortino, turnover) are unreliable."
        )
    if (never := threshold_note(comparison)) is not None:
        found.append(never)
    return found


def threshold_note(comparison: Comparison) -> str | None:
    """The sentence saying that no forecast of the model reached the buy threshold over the
    window (so the strategy never bought); None when one did."""
    reached = comparison.reach
    if reached is None or reached.sessions:
        return None
    sessions = len(comparison.market.days)
    probability = comparison.market.probability
    what = "probability of a rise" if probability else "expected change"
    shown = f"{reached.largest:.3f}" if probability else f"{reached.largest or 0:+.3%}"
    level = f"{reached.threshold:.3f}" if probability else f"+{reached.threshold:.3%}"
    if reached.largest is None:
        largest = "no session had a forecast"
    else:
        largest = f"the largest {what} was {shown}, {reached.symbol} on {reached.day}"
    return (
        f"No forecast of the model reached the buy threshold {level} in any "
        f"of the {sessions} sessions ({largest}): the strategy never bought, and its column "
        "is cash throughout."
    )


def report_html(
    comparison: Comparison,
    label: str,
    title: str,
    *,
    trained_through: date | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The equity curves (in-sample sessions shaded), the table, the notes and the costs as
    a self-contained HTML page (inline SVG, no script)."""
    days = comparison.market.days
    in_sample = in_sample_sessions(days, trained_through)
    rows = table(comparison.figures, label, in_sample)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r.values()) + "</tr>" for r in rows
    )
    paragraphs = "".join(
        f"<p>{html.escape(n)}</p>"
        for n in [*notes, conditions(comparison.rules, comparison.market.probability)]
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;"
        "padding:3px 8px}table{border-collapse:collapse}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{_chart(comparison, label, trained_through)}"
        f"<table><tr>{head}</tr>{body}</table>{paragraphs}</body></html>"
    )


def _chart(comparison: Comparison, label: str, trained_through: date | None) -> str:
    series = {names(label)[c]: comparison.runs[c].equity for c in COLUMNS}
    return equity_svg(comparison.market.days, series, trained_through)


def equity_svg(
    days: Sequence[date],
    series: dict[str, np.ndarray],
    trained_through: date | None = None,
) -> str:
    """Equity curves by name over ``days`` as inline SVG, the in-sample sessions shaded."""
    low = min(float(np.min(v)) for v in series.values())
    high = max(float(np.max(v)) for v in series.values())
    span = (high - low) or 1.0
    step = max(len(days) // 600, 1)  # at most ~600 points a line

    def x(i: float) -> float:
        return PAD + i * (WIDTH - 2 * PAD) / max(len(days) - 1, 1)

    lines = [_shade(days, trained_through, x)]
    for n, (name, values) in enumerate(series.items()):
        palette = (*COLORS, *EXTRA_COLORS)
        color = palette[n % len(palette)]
        points = " ".join(
            f"{x(i):.1f},{HEIGHT - PAD - (float(values[i]) - low) * (HEIGHT - 2 * PAD) / span:.1f}"
            for i in [*range(0, len(days), step), len(days) - 1]
        )
        lines.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/>'
            f'<text x="{PAD + (n % 4) * 210}" y="{16 + 14 * (n // 4)}" fill="{color}">'
            f"{html.escape(name)}</text>"
        )
    return (
        f'<svg width="{WIDTH}" height="{HEIGHT}" font-size="12" role="img">{"".join(lines)}'
        f'<text x="{PAD}" y="{HEIGHT - 15}">{days[0]}</text>'
        f'<text x="{WIDTH - PAD - 70}" y="{HEIGHT - 15}">{days[-1]}</text>'
        f'<text x="2" y="{PAD}">{high:,.0f}</text><text x="2" y="{HEIGHT - PAD}">{low:,.0f}</text>'
        "</svg>"
    )


def _shade(days: Sequence[date], trained_through: date | None, x: Callable[[float], float]) -> str:
    """A band behind the sessions the model saw in training (the first ones: days are in
    order), labelled with their count."""
    count = in_sample_sessions(days, trained_through)
    if not count:
        return ""
    left, right = x(0), x(min(count - 0.5, len(days) - 1))
    return (
        f'<rect class="in-sample" x="{left:.1f}" y="{PAD}" width="{max(right - left, 1):.1f}" '
        f'height="{HEIGHT - 2 * PAD}" fill="{SHADE}"/>'
        f'<text x="{left + 4:.1f}" y="{PAD + 14}">in sample: {count} of {len(days)} sessions'
        "</text>"
    )
