"""The demo's HTML report: one self-contained file with its pictures embedded.

Per rollout, a picture of the traffic weights (the candidate's share as the rollout set
it) and of the error rate and request rate each version saw, second by second; the
lineage graph of the promoted model (from its package back to the source dataset
versions); and tables of the gates, the rollout events, the velocity metrics and the
timings. Pictures are matplotlib SVG, inlined, so the file opens anywhere, offline.
"""

from __future__ import annotations

import html
import io
from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = ["write_report", "render_report", "rollout_figure", "lineage_figure"]

_KIND_COLOURS = {"dataset": "#4c78a8", "feature-view": "#72b7b2", "training-config": "#f58518",
                 "code": "#e45756", "environment": "#b279a2", "model": "#54a24b", "run": "#9d755d",
                 "checkpoint": "#bab0ac", "tree": "#bab0ac"}


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: inline SVG in HTML


def rollout_figure(outcome) -> str:
    """Traffic weights and per-version error and request rates over the rollout, as inline SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cand, inc = outcome.candidate[7:19], outcome.incumbent[7:19]
    t0 = outcome.started
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(8, 6.4), sharex=True)
    # weights as a step function from the configs applied
    xs, cw, sw = [], [], []
    for at, weights, shadows in outcome.applied:
        xs.append(at - t0)
        cw.append(weights.get(cand, 0.0))
        sw.append(shadows.get(cand, 0.0))
    if xs:
        xs.append(max(outcome.ended - t0, xs[-1]))
        cw.append(cw[-1])
        sw.append(sw[-1])
        ax1.step(xs, cw, where="post", label=f"candidate {cand} weight", color="#e45756", linewidth=2)
        ax1.step(xs, [100 - w for w in cw], where="post", label=f"incumbent {inc} weight", color="#4c78a8",
                 linewidth=2)
        ax1.step(xs, sw, where="post", label="shadow copies to the candidate", color="#e45756", linestyle=":")
    ax1.set_ylabel("% of traffic")
    ax1.set_ylim(-5, 105)
    ax1.legend(loc="center left", fontsize=7)
    ax1.set_title(f"Rollout of the {outcome.label}: {outcome.state}", fontsize=10)
    seconds = outcome.seconds
    ts = [s.t - t0 for s in seconds]
    for version, colour, name in ((cand, "#e45756", "candidate"), (inc, "#4c78a8", "incumbent")):
        reqs = [s.requests.get(version, 0) for s in seconds]
        errs = [s.errors.get(version, 0) for s in seconds]
        rates = [100.0 * e / r if r else float("nan") for e, r in zip(errs, reqs, strict=True)]
        ax2.plot(ts, rates, marker=".", color=colour, label=f"{name} {version}")
        ax3.plot(ts, reqs, color=colour, label=f"{name} {version}")
    ax2.set_ylabel("error rate (%)")
    ax2.set_ylim(-1, max(5.0, ax2.get_ylim()[1]))
    ax2.legend(loc="upper left", fontsize=7)
    ax3.set_ylabel("requests / s")
    ax3.set_xlabel("seconds since the rollout started")
    ax3.legend(loc="upper left", fontsize=7)
    for event in outcome.events:
        name = event.get("event")
        if name in ("stage", "promoted", "rolled-back"):
            x = float(event.get("t", t0)) - t0
            for ax in (ax1, ax2, ax3):
                ax.axvline(x, color="#888888", linewidth=0.6, linestyle="--")
            ax1.annotate(name, (x, 102), fontsize=6, rotation=90, va="top", ha="right")
    fig.tight_layout()
    return _svg(fig)


def _layers(store, digest: str, *, max_depth: int = 6) -> tuple[dict[str, Any], list[tuple[str, str]], dict[str, int]]:
    """The ancestors of ``digest`` (runs and blobs left out), the edges between them, and each one's depth."""
    skip = {"blob", "checkpoint", "tree"}
    arts: dict[str, Any] = {}
    depth: dict[str, int] = {}
    edges: list[tuple[str, str]] = []
    frontier = [digest]
    depth[digest] = 0
    arts[digest] = store.artifacts.get(digest)
    while frontier:
        nxt = []
        for child in frontier:
            if depth[child] >= max_depth:
                continue
            for parent in store.lineage.parents(child):
                try:
                    art = arts.get(parent) or store.artifacts.get(parent)
                except Exception:  # recorded elsewhere
                    continue
                if art.kind in skip:
                    continue
                edges.append((parent, child))
                if parent not in arts:
                    arts[parent] = art
                    depth[parent] = depth[child] + 1
                    nxt.append(parent)
        frontier = nxt
    for _ in range(len(arts)):  # longest path from the model: a parent always sits left of every child
        changed = False
        for parent, child in edges:
            if depth[parent] < depth[child] + 1:
                depth[parent] = depth[child] + 1
                changed = True
        if not changed:
            break
    return arts, edges, depth


def lineage_figure(store, digest: str) -> str:
    """The lineage graph of ``digest``, sources on the left and the model on the right, as inline SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arts, edges, depth = _layers(store, digest)
    deepest = max(depth.values())
    columns: dict[int, list[str]] = defaultdict(list)
    for d, level in sorted(depth.items(), key=lambda kv: (kv[1], arts[kv[0]].kind, arts[kv[0]].name or "")):
        columns[level].append(d)
    pos: dict[str, tuple[float, float]] = {}
    tallest = max(len(c) for c in columns.values())
    for level, members in columns.items():
        for i, d in enumerate(members):
            pos[d] = (float(deepest - level), (len(members) - 1) / 2.0 - i)
    fig, ax = plt.subplots(figsize=(2.4 * (deepest + 1) + 1, 0.9 * tallest + 1.5))
    for parent, child in set(edges):
        (x0, y0), (x1, y1) = pos[parent], pos[child]
        ax.annotate("", xy=(x1 - 0.32, y1), xytext=(x0 + 0.32, y0),
                    arrowprops={"arrowstyle": "->", "color": "#777777", "lw": 0.8})
    for d, (x, y) in pos.items():
        art = arts[d]
        colour = _KIND_COLOURS.get(art.kind, "#cccccc")
        text = f"{art.kind}\n{(art.name or '')[:22]}\n{d[7:19]}"
        ax.text(x, y, text, ha="center", va="center", fontsize=6.5, color="white" if art.kind != "tree" else "black",
                bbox={"boxstyle": "round,pad=0.35", "facecolor": colour, "edgecolor": "#333333",
                      "linewidth": 1.6 if d == digest else 0.5})
    ax.set_xlim(-0.6, deepest + 0.6)
    ax.set_ylim(-tallest / 2.0 - 0.2, tallest / 2.0 + 0.2)
    ax.axis("off")
    ax.set_title(f"Lineage of the promoted model {digest[7:19]}", fontsize=10)
    return _svg(fig)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; display: block; }
code { background: #f4f4f4; padding: 1px 4px; word-break: break-all; }
pre { white-space: pre-wrap; word-break: break-all; background: #f4f4f4; padding: 6px; }
.pass { color: #2a7a2a; } .fail { color: #b22; }
"""


def render_report(cycle) -> str:
    """The report of a finished demo run as one HTML document."""
    from factory.runtime._demo_summary import timeline_rows
    from factory.runtime._velocity import velocity

    store = cycle.store
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>factory demo report</title>",
             f"<style>{_STYLE}</style></head><body>", "<h1>factory demo report</h1>"]
    prod = store.refs.get(f"model/{cycle.model}/prod")
    parts.append(f"<p>Production model <code>{html.escape(prod or '-')}</code>; the store is "
                 f"<code>{html.escape(str(store.home))}</code>.</p>")

    parts.append("<h2>Rollouts</h2>")
    for i, outcome in enumerate(cycle.rollouts):
        parts.append(f"<h3>The {html.escape(outcome.label)}: {html.escape(outcome.state)}</h3>")
        if outcome.reason:
            parts.append(f"<p>{html.escape(outcome.reason)}</p>")
        parts.append(f"<figure class='picture' id='rollout-{i}'>{rollout_figure(outcome)}"
                     f"<figcaption>Traffic weights, error rate and requests per second by version, "
                     f"rollout run {html.escape(outcome.run)}</figcaption></figure>")
        parts.append(_table(["t (s)", "event", "detail"],
                            [[f"{t:.1f}", name, detail] for t, name, detail in timeline_rows(outcome)]))

    if prod:
        parts.append("<h2>Lineage of the promoted model</h2>")
        parts.append(f"<figure class='picture' id='lineage'>{lineage_figure(store, prod)}"
                     "<figcaption>From the source dataset versions through the feature views and training "
                     "set to the package</figcaption></figure>")

    parts.append("<h2>Prod gates</h2>")
    rows = []
    for model, run in cycle.gates.items():
        for outcome in run.outcomes:
            rows.append([model[7:19], outcome.policy, "pass" if outcome.passed else "FAIL", outcome.attestation[7:23],
                         outcome.index])
    parts.append(_table(["model", "policy", "result", "attestation", "log index"], rows))

    parts.append("<h2>Velocity</h2>")
    v = velocity(store).to_json()
    parts.append(_table(["metric", "value"], [[k, "-" if val is None else (f"{val:.3g}" if isinstance(val, float)
                                                                          else val)] for k, val in v.items()]))
    parts.append("<h2>Timings</h2>")
    parts.append(_table(["phase", "seconds"], [[k, f"{s:.1f}"] for k, s in cycle.timings.items()]))
    if cycle.endpoint:
        parts.append("<h2>Query the endpoint</h2>")
        parts.append(f"<pre>{html.escape(cycle.endpoint['curl'])}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(cycle, path: str | Path) -> Path:
    """Write the report to ``path`` (folders made as needed); the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(cycle), encoding="utf-8")
    return path.resolve()
