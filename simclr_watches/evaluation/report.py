"""Evaluation reports: markdown tables, the Recall@k plot, the failures page, results.md and results.json.

Every file written here is marked as this program's (see :mod:`simclr_watches.core.outputs`),
so a later run replaces it only with ``force`` and never replaces anything else.
The plot needs matplotlib, of the ``eval`` extra (see :mod:`simclr_watches.evaluation.extras`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np

from simclr_watches.core.atomic import atomic_path, write_text_atomic
from simclr_watches.core.outputs import (
    GENERATOR, HTML, HTML_META, PNG, PNG_KEY, OutputKind, html_owned, json_format_owned, owned_folder, png_owned,
    prepare_output,
)
from simclr_watches.evaluation.runner import Report

COLUMNS = {
    "groups": ("R@1", "R@5", "R@10", "mAP@10", "MRR", "N-S"),
    "catalog-photo": ("R@1", "R@5", "R@10", "mAP@10", "MRR"),
    "photo": ("R@1", "R@5", "R@10", "MRR"),
}


def ranking_markdown(report: Report) -> str:
    """One table per task: a row per method, the protocol's metric columns (``COLUMNS``), and seconds."""
    parts = []
    for t in report.tasks:
        cols = COLUMNS[t.protocol]
        first = next(iter(report.results[t.name].values()), None)
        scored = int(first.summary["queries"]) if first else 0
        left = f", {len(t.queries) - scored} without a relevant item left out" if scored < len(t.queries) else ""
        parts.append(f"**{t.name}** ({scored} queries{left}, gallery {len(t.gallery)})\n")
        parts.append("| method | " + " | ".join(cols) + " | s |")
        parts.append("|---" * (len(cols) + 2) + "|")
        for name, r in report.results[t.name].items():
            cells = [f"{r.summary[c]:.2f}" if c == "N-S" else f"{r.summary[c]:.3f}" for c in cols]
            parts.append(f"| {name} | " + " | ".join(cells) + f" | {r.seconds:.1f} |")
        parts.append("")
    return "\n".join(parts)


def attributes_markdown(res: dict) -> str:
    """The attributes table: a row per method and one for chance, a column per attribute."""
    attrs = res["attributes"]
    lines = [f"**attributes** ({res['queries']} queries, share of top-{res['k']} agreeing)\n",
             "| method | " + " | ".join(attrs) + " |", "|---" * (len(attrs) + 1) + "|"]
    for name, shares in [*res["methods"].items(), ("chance", res["chance"])]:
        lines.append(f"| {name} | " + " | ".join(f"{shares[a]:.3f}" for a in attrs) + " |")
    return "\n".join(lines) + "\n"


RESULTS_FORMAT = "simclr-watches-evaluation"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
PLOT_FILE = "recall_at_k.png"
SIMULATED_DIR = "simulated"
_results_json_owned = json_format_owned(RESULTS_FORMAT)


def _results_md_owned(path: Path) -> bool:
    """results.md is ours when the results.json written before it, beside it, is."""
    return _results_json_owned(path.with_name(RESULTS_JSON))


RESULTS_JSON_OUTPUT = OutputKind("evaluation results file", folder=False, owned=_results_json_owned, suffix=".json")
RESULTS_MD_OUTPUT = OutputKind("evaluation results table", folder=False, owned=_results_md_owned, suffix=".md")
EVAL_OUTPUT = OutputKind(
    "evaluation folder",
    folder=True,
    owned=owned_folder({RESULTS_JSON: _results_json_owned, RESULTS_MD: _results_md_owned, SIMULATED_DIR: Path.is_dir},
                       others=lambda p: png_owned(p) or html_owned(p)),  # plots and failure pages of any name
)


def check_outputs(out_dir: Path, *, plot: Path | None = None, failures: Path | None = None, force: bool = False,
                  inputs: Iterable[Path | str | None] = ()) -> None:
    """Checks, before any work, that an evaluation may write its outputs.

    Args:
        out_dir: folder of results.md, results.json, the default plot and the simulated queries.
        plot: the Recall@k PNG, if one is drawn (the CLI's default: ``out_dir/recall_at_k.png``).
        failures: the HTML page of the worst queries, if one is written.
        force: replace an earlier evaluation's outputs.
        inputs: the data (folder or CSV) and other inputs the outputs must stay clear of.

    Raises:
        SimclrWatchesError: an output that may not be written (see :func:`simclr_watches.core.outputs.prepare_output`).
    """
    inputs = list(inputs)
    prepare_output(out_dir, EVAL_OUTPUT, force=force, inputs=inputs)
    for path, kind in ((plot, PNG), (failures, HTML)):
        if path is not None:
            prepare_output(path, kind, force=force, inputs=inputs)


def plot_recall(report: Report, out: Path, force: bool = False) -> Path:
    """Recall@k curves (k = 1..20), one panel per task, one line per method; PNG at ``out``.

    Args:
        force: replace a PNG that this program wrote earlier.
    """
    out = Path(out)
    prepare_output(out, PNG, force=force)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(report.tasks)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    for ax, t in zip(axes[0], report.tasks):
        for name, r in report.results[t.name].items():
            ax.plot(range(1, len(r.curve) + 1), r.curve, marker=".", label=name)
        ax.set(title=t.name, xlabel="k", ylabel="Recall@k", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png", metadata={PNG_KEY: GENERATOR})
    plt.close(fig)
    return out


def _thumb_uri(path: Path, cache: dict[Path, str], size: int = 80) -> str:
    """A small JPEG of the image as a data URI (cached: one gallery image recurs across queries)."""
    from simclr_watches.data.images import load_image
    from simclr_watches.retrieval.sheet import data_uri

    if path not in cache:
        img = load_image(path).rgb
        img.thumbnail((size, size))
        cache[path] = data_uri(img, quality=70)
    return cache[path]


def write_failures(report: Report, out: Path, worst: int = 8, force: bool = False) -> Path:
    """Self-contained HTML: per task and method, the worst queries and their top 5 results.

    Worst = no relevant result at all, then the latest first hit. A result
    framed green is relevant, red is not; the last image is the query's first
    relevant gallery item, for comparison.

    Args:
        force: replace a page that this program wrote earlier.
    """
    from html import escape

    out = Path(out)
    prepare_output(out, HTML, force=force)

    cache: dict[Path, str] = {}

    def img(p: Path, colour: str, title: str) -> str:
        return (f'<img src="{_thumb_uri(p, cache)}" title="{escape(title)}" '
                f'style="border:3px solid {colour};margin:2px;max-height:80px">')

    html = [f"<!doctype html><meta charset='utf-8'>{HTML_META}<title>evaluation failures</title>",
            "<style>body{font-family:sans-serif}td{vertical-align:middle;padding:2px 6px}</style>",
            f"<h1>Worst queries: {escape(report.protocol)} on {escape(report.data)}</h1>"]
    def label(p: Path, root: Path) -> str:
        return str(p.relative_to(root)) if p.is_relative_to(root) else p.name

    for t in report.tasks:
        for name, r in report.results[t.name].items():
            rank = np.where(r.first_hit > 0, r.first_hit, np.iinfo(np.int64).max)
            has_relevant = t.relevant.any(axis=1)
            order = [q for q in np.argsort(-rank, kind="stable") if has_relevant[q]][:worst]
            html.append(f"<h2>{escape(t.name)}: {escape(name)}</h2><table>")
            for q in order:
                hit = f"first hit at rank {r.first_hit[q]}" if r.first_hit[q] else "no hit"
                cells = [img(t.queries[q], "#333", label(t.queries[q], t.root)), escape(hit)]
                cells += [img(t.gallery[g], "green" if t.relevant[q, g] else "red", label(t.gallery[g], t.root))
                          for g in r.top[q]]
                cells.append("expected " + img(t.gallery[int(np.argmax(t.relevant[q]))], "green", "expected"))
                html.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            html.append("</table>")
    return write_text_atomic(out, "\n".join(html))


def write_outputs(out_dir: Path, markdown: str, payload: dict, force: bool = False) -> tuple[Path, Path]:
    """Writes ``results.md`` and ``results.json`` into ``out_dir``.

    results.json starts with ``"format": RESULTS_FORMAT``, which marks both files as
    ours; it is written first.

    Args:
        force: replace the results of an earlier evaluation.
    """
    md, js = Path(out_dir) / RESULTS_MD, Path(out_dir) / RESULTS_JSON
    prepare_output(js, RESULTS_JSON_OUTPUT, force=force)
    prepare_output(md, RESULTS_MD_OUTPUT, force=force)
    write_text_atomic(js, json.dumps({"format": RESULTS_FORMAT, **payload}, indent=2))
    return write_text_atomic(md, markdown), js
