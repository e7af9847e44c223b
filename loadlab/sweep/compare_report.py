"""compare.html: the curves of every run overlaid (throughput and p95 against users, CPU against users) and
each comparison's table, with compare.json beside it. Open runs (compare refuses to mix them with closed
ones) are overlaid against the intended rate, throughput with the y = x line of a run that kept up."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadlab.sweep import analysis
from loadlab.sweep.compare import Run
from loadlab.sweep.report import RATE_AXIS, _figure, _save

HTML = "compare.html"
JSON = "compare.json"
PLOTS = {"throughput": "compare_throughput.png", "p95": "compare_p95.png", "cpu": "compare_cpu.png"}


def _points(run: Run, key: str) -> tuple[list[float], list[float]]:
    """(x, y) of a figure over the run's steps: x is the users, or the intended rate of an open run."""
    pts = sorted((analysis.load(s), float(s[key])) for s in run.steps if isinstance(s.get(key), int | float))
    return [u for u, _ in pts], [v for _, v in pts]


def _plot(runs: Sequence[Run], keys: Sequence[tuple[str, str]], ylabel: str, title: str, path: Path) -> None:
    open_runs = bool(runs) and all(run.open for run in runs)
    fig, ax = _figure(RATE_AXIS if open_runs else "users")
    if open_runs and keys[0][0] == "rps":
        top = max((max(_points(run, "rps")[0], default=0.0) for run in runs), default=0.0) * 1.05
        ax.plot([0, top], [0, top], ":", color="grey", label="y = x: every arrival answered")
    for i, run in enumerate(runs):
        for key, style in keys:
            xs, ys = _points(run, key)
            if xs:
                label = f"{run.name}" + (f" {key}" if len(keys) > 1 else "")
                ax.plot(xs, ys, style, color=f"C{i}", marker="o", label=label)
    ax.set_ylabel(ylabel)
    _save(fig, title, path, ax)


def _g(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def _knees(curves: dict[str, Any]) -> str:
    """The knees (and USL peaks, or an open run's saturation rates) of both runs."""
    if "knee_rate" in curves:
        return (
            f"knee {_g(curves['knee_rate'][0])} &rarr; {_g(curves['knee_rate'][1])}/s; saturation "
            f"{_g(curves['saturation_rate'][0])} &rarr; {_g(curves['saturation_rate'][1])}/s "
            "(open model: latency from intended start)"
        )
    return (
        f"knee {_g(curves['knee_users'][0])} &rarr; {_g(curves['knee_users'][1])} users; "
        f"USL peak {_g(curves['usl_peak_users'][0])} &rarr; {_g(curves['usl_peak_users'][1])} users"
    )


def _table(result: dict[str, Any]) -> str:
    step = "rate" if result.get("model") == "open" else "users"
    head = "".join(
        f"<th>{h}</th>" for h in (step, "figure", "A", "B", "change", "95% interval", "p (Holm)", "verdict")
    )
    body = []
    for r in result["rows"]:
        low, high = r.get("ci_low"), r.get("ci_high")
        interval = f"{100 * low:+.1f}% .. {100 * high:+.1f}%" if low is not None and high is not None else "-"
        change = f"{100 * r['change']:+.1f}%" if r.get("change") is not None else "-"
        p = r.get("p_adjusted")
        cls = {"slower": "worse", "more failures": "worse", "faster": "better", "fewer failures": "better"}
        body.append(
            f"<tr class='{cls.get(r['verdict'], '')}'><td>{r['users']}</td><td>{r['figure']}</td>"
            f"<td>{'-' if r['a'] is None else r['a']}</td><td>{'-' if r['b'] is None else r['b']}</td>"
            f"<td>{change}</td><td>{interval}</td><td>{'-' if p is None else f'{p:.3g}'}</td>"
            f"<td>{html.escape(r['verdict'])}</td></tr>"
        )
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def write_html(folder: Path, runs: Sequence[Run], results: Sequence[dict[str, Any]]) -> Path:
    """compare.json, the three plots and compare.html in `folder` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / JSON).write_text(
        json.dumps({"runs": [str(r.path) for r in runs], "comparisons": list(results)}, indent=2) + "\n"
    )
    x = "the intended rate" if runs and all(run.open for run in runs) else "users"
    p95 = "p95 from intended start (ms)" if x != "users" else "p95 (ms)"
    _plot(runs, [("rps", "-")], "requests/s", f"Throughput against {x}", folder / PLOTS["throughput"])
    _plot(runs, [("p95_ms", "-")], p95, f"p95 latency against {x}", folder / PLOTS["p95"])
    _plot(
        runs,
        [("target_cpu", "-"), ("loadgen_cpu", "--")],
        "cores",
        f"CPU against {x} (target solid, generator dashed)",
        folder / PLOTS["cpu"],
    )
    sections = []
    for result in results:
        differs = "".join(
            f"<li>{html.escape(k)}: {html.escape(str(a))} | {html.escape(str(b))}</li>"
            for k, (a, b) in result["differs"].items()
        )
        curves = result["curves"]
        diag = "".join(
            f"<li>{html.escape(str(d['users']))}{'' if 'rate' in d else ' users'}: "
            f"{html.escape(','.join(d['a']) or '-')} &rarr; {html.escape(','.join(d['b']) or '-')}</li>"
            for d in curves["diagnosis_changes"]
        )
        sections.append(
            f"<h2>{html.escape(Path(result['b']).name)} against {html.escape(Path(result['a']).name)}: "
            f"{html.escape(result['verdict'])}</h2>"
            + (f"<p>What differs:</p><ul>{differs}</ul>" if differs else "")
            + f"<p>max rps {_g(curves['max_rps'][0])} &rarr; {_g(curves['max_rps'][1])}; {_knees(curves)}</p>"
            + (f"<p>Diagnoses that changed:</p><ul>{diag}</ul>" if diag else "")
            + _table(result)
        )
    plots = "".join(f"<img src='{name}' alt='{key}'>" for key, name in PLOTS.items())
    names = ", ".join(html.escape(str(r.path)) for r in runs)
    alpha, tolerance = results[0]["alpha"], 100 * results[0]["tolerance"]
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>loadlab compare</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}} tr.worse{{background:#fdd}}
tr.better{{background:#dfd}} img{{max-width:49%}}</style>
</head><body><h1>loadlab compare</h1>
<p>Runs: {names}. A change is real where its Holm-corrected p-value is below {alpha:g} and its whole
95% interval lies beyond &plusmn;{tolerance:g}%; intervals come from a block bootstrap of each
step's per-second samples.</p>
{plots}{"".join(sections)}</body></html>
"""
    out = folder / HTML
    out.write_text(page)
    return out
