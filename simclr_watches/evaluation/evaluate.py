"""Retrieval evaluation protocols: which photos query which gallery, and what counts as a hit.

Protocols (see docs/EVALUATION.md):

* ``groups``: a folder of sub-folders (one per object) or a manifest CSV; every
  photo of a group with 2+ members queries all photos, itself excluded.
* ``catalog-photo``: a manifest CSV; packshots are the gallery, lifestyle photos the queries.
* ``photo``: simulated user photos (:mod:`simclr_watches.data.simulate`) of each
  item's first image query the whole catalog, one task per severity.
* ``attributes``: a CSV of attributes per image; the share of top-k results that
  agree with the query on each attribute.

A task is a (Q, G) problem: query files, gallery files, and boolean masks of
relevant and ignored gallery items per query. Ignored items (the query itself,
a byte-identical copy, another group of the same family, another view of the
source item) are neither hits nor misses. Queries never reach the gallery
unignored; :func:`leaks` checks it and :func:`run` refuses a task that leaks.
"""

from __future__ import annotations

import csv
import json
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from simclr_watches.core.atomic import atomic_path, write_text_atomic
from simclr_watches.evaluation.method import Method
from simclr_watches.data.images import scan_images
from simclr_watches.core.errors import SimclrWatchesError
from simclr_watches.evaluation.metrics import recall_curve, score_rankings, summarize
from simclr_watches.core.outputs import (
    GENERATOR, HTML, HTML_META, PNG, PNG_KEY, OutputKind, html_owned, json_format_owned, owned_folder, png_owned,
    prepare_output,
)
from simclr_watches.weights.loading import sha256_file

PROTOCOLS = ("groups", "catalog-photo", "photo", "attributes")
COLUMNS = {
    "groups": ("R@1", "R@5", "R@10", "mAP@10", "MRR", "N-S"),
    "catalog-photo": ("R@1", "R@5", "R@10", "mAP@10", "MRR"),
    "photo": ("R@1", "R@5", "R@10", "MRR"),
}


@dataclass(frozen=True)
class Item:
    """A catalog image with its group (one object / watch) and family (colour variants of one model)."""

    path: Path
    group: str
    family: str
    kind: str = ""


@dataclass
class Task:
    """One retrieval problem.

    Attributes:
        name: e.g. ``"groups"`` or ``"photo/hard"``.
        protocol: key of ``COLUMNS``.
        queries: Q query files.
        gallery: G gallery files.
        relevant: (Q, G) bool.
        ignore: (Q, G) bool, removed from each query's ranking.
        root: folder that display labels are relative to.
    """

    name: str
    protocol: str
    queries: list[Path]
    gallery: list[Path]
    relevant: np.ndarray
    ignore: np.ndarray
    root: Path


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV file, checking that ``required`` columns exist and that it has rows."""
    if not path.is_file():
        raise SimclrWatchesError(f"{path}: no such CSV file")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SimclrWatchesError(f"{path}: cannot read CSV: {e}") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise SimclrWatchesError(f"{path}: missing column(s) {', '.join(missing)}; found: {', '.join(header) or 'none'}")
    if not rows:
        raise SimclrWatchesError(f"{path}: no rows")
    return rows


def _resolve_rows(manifest: Path, rows: list[dict[str, str]]) -> list[Path]:
    """Image paths of manifest rows, relative to the manifest's folder; each must exist."""
    out = []
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        p = manifest.parent / row["path"]
        if not p.is_file():
            raise SimclrWatchesError(f"{manifest}: line {i}: image {row['path']} does not exist")
        out.append(p)
    return out


def load_items(data: Path, kind: str | None = None) -> list[Item]:
    """The items of a folder of sub-folders or of a manifest CSV.

    In a folder, an image's group is its first sub-folder (an image directly in
    the folder is a group of its own) and the family is the group. A manifest
    needs ``path`` and ``group_id``; ``family`` defaults to the group, and
    ``kind`` is needed when filtering by ``kind``.

    Raises:
        SimclrWatchesError: missing folder or columns, missing images, nothing left.
    """
    data = Path(data)
    if data.suffix.lower() == ".csv":
        rows = _read_csv(data, ["path", "group_id"] + (["kind"] if kind else []))
        paths = _resolve_rows(data, rows)
        items = [Item(p, r["group_id"], r.get("family") or r["group_id"], r.get("kind", "")) for p, r in zip(paths, rows)]
    else:
        items = []
        for p in scan_images(data):
            parts = p.relative_to(data).parts
            group = parts[0] if len(parts) > 1 else p.stem
            items.append(Item(p, group, group))
    if kind:
        items = [it for it in items if it.kind == kind]
    if not items:
        raise SimclrWatchesError(f"{data}: no images" + (f" of kind {kind!r}" if kind else ""))
    return items


def _pair_masks(queries: Sequence[Item], gallery: Sequence[Item]) -> tuple[np.ndarray, np.ndarray]:
    """(same group, same family but other group) masks, each (Q, G) bool."""
    qg = np.array([q.group for q in queries], object)[:, None]
    gg = np.array([g.group for g in gallery], object)[None, :]
    qf = np.array([q.family for q in queries], object)[:, None]
    gf = np.array([g.family for g in gallery], object)[None, :]
    same_group = qg == gg
    return same_group, (qf == gf) & ~same_group


def _identical(queries: Sequence[Path], gallery: Sequence[Path]) -> np.ndarray:
    """(Q, G) bool: the same file, or a file with the same bytes."""
    digest = {p: sha256_file(p) for p in dict.fromkeys([*queries, *gallery])}
    qd = np.array([digest[p] for p in queries], object)[:, None]
    gd = np.array([digest[p] for p in gallery], object)[None, :]
    return qd == gd


def _subsample(n: int, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most ``limit`` of ``n`` queries, drawn with ``seed``."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise SimclrWatchesError(f"--limit must be >= 1, got {limit}")
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def groups_task(data: Path, kind: str | None = None, limit: int | None = None, seed: int = 0) -> Task:
    """Every photo of a group with 2+ members queries all photos; relevant = rest of its group.

    Singleton groups stay in the gallery as distractors. The query itself,
    byte-identical copies and other groups of its family are ignored.
    """
    items = load_items(data, kind)
    sizes: dict[str, int] = {}
    for it in items:
        sizes[it.group] = sizes.get(it.group, 0) + 1
    queries = [it for it in items if sizes[it.group] > 1]
    if not queries:
        raise SimclrWatchesError(f"{data}: no group has two or more images, so nothing can be queried")
    queries = [queries[i] for i in _subsample(len(queries), limit, seed)]
    qp, gp = [q.path for q in queries], [g.path for g in items]
    same_group, family = _pair_masks(queries, items)
    ignore = _identical(qp, gp) | family
    root = data.parent if data.is_file() else data
    return Task("groups", "groups", qp, gp, same_group & ~ignore, ignore, root)


def catalog_photo_task(manifest: Path, limit: int | None = None, seed: int = 0) -> Task:
    """Lifestyle photos query the packshots; relevant = packshots of the same group.

    Packshots of another group of the same family are ignored; a query whose
    group has no packshot counts in ``queries_without_relevant``.
    """
    manifest = Path(manifest)
    if manifest.suffix.lower() != ".csv":
        raise SimclrWatchesError(f"{manifest}: the catalog-photo protocol needs a manifest CSV")
    _read_csv(manifest, ["path", "group_id", "kind"])
    items = load_items(manifest)
    gallery = [it for it in items if it.kind == "packshot"]
    queries = [it for it in items if it.kind == "lifestyle"]
    if not gallery or not queries:
        raise SimclrWatchesError(f"{manifest}: needs rows of kind 'packshot' (gallery) and 'lifestyle' (queries)")
    queries = [queries[i] for i in _subsample(len(queries), limit, seed)]
    qp, gp = [q.path for q in queries], [g.path for g in gallery]
    same_group, family = _pair_masks(queries, gallery)
    ignore = _identical(qp, gp) | family
    return Task("catalog-photo", "catalog-photo", qp, gp, same_group & ~ignore, ignore, manifest.parent)


def photo_tasks(data: Path, severities: Sequence[str], cache_dir: Path, kind: str | None = None,
                limit: int | None = None, seed: int = 0) -> list[Task]:
    """Simulated photos of each group's first image (by path) query the whole catalog.

    Relevant = the source image; the group's other images (other views of the
    same watch) and other groups of its family are ignored. The simulated
    files are written under ``cache_dir/<severity>/``, which must lie outside
    the data folder so that they can never be scanned into a gallery.
    """
    from simclr_watches.data.simulate import SEVERITIES, simulate_file

    unknown = [s for s in severities if s not in SEVERITIES]
    if unknown or not severities:
        raise SimclrWatchesError(f"unknown severity {', '.join(unknown) or '(none)'}; known: {', '.join(SEVERITIES)}")
    data, cache_dir = Path(data), Path(cache_dir)
    root = data.parent if data.is_file() else data
    if cache_dir.resolve().is_relative_to(root.resolve()):
        raise SimclrWatchesError(f"{cache_dir}: the simulated queries must be written outside the data folder {root}")
    items = load_items(data, kind)
    firsts: dict[str, Item] = {}
    for it in sorted(items, key=lambda it: it.path.as_posix()):
        firsts.setdefault(it.group, it)
    sources = list(firsts.values())
    sources = [sources[i] for i in _subsample(len(sources), limit, seed)]
    gp = [g.path for g in items]
    same_group, family = _pair_masks(sources, items)
    is_source = np.array([[s.path == g for g in gp] for s in sources], bool)
    tasks = []
    for severity in severities:
        qp = []
        for i, s in enumerate(sources):
            # The item's path keys its scene, so a --limit sample does not change any query's pixels.
            key = zlib.crc32(s.path.relative_to(root).as_posix().encode())
            out = cache_dir / severity / f"{i:05d}_{s.group}.jpg"
            qp.append(simulate_file(s.path, out, (seed, key), severity))
        ignore = (same_group & ~is_source) | family | _identical(qp, gp)
        tasks.append(Task(f"photo/{severity}", "photo", qp, gp, is_source & ~ignore, ignore, root))
    return tasks


def leaks(task: Task) -> list[tuple[Path, Path]]:
    """(query, gallery) pairs where a query's own file or bytes would be ranked (not ignored)."""
    same = _identical(task.queries, task.gallery) & ~task.ignore
    return [(task.queries[q], task.gallery[g]) for q, g in zip(*np.nonzero(same))]


@dataclass
class MethodResult:
    """One method on one task: summary metrics, Recall@k curve, and what the worst queries got."""

    summary: dict[str, float]
    curve: list[float]
    seconds: float
    first_hit: np.ndarray = field(repr=False)
    top: np.ndarray = field(repr=False)  # (Q, 5) gallery indices of the first results, ignored items skipped


def _top_results(scores: np.ndarray, ignore: np.ndarray, n: int = 5) -> np.ndarray:
    s = np.where(ignore, -np.inf, scores)
    return np.argsort(-s, axis=1, kind="stable")[:, :n]


def run_task(task: Task, method: Method) -> MethodResult:
    """Scores one task with one method.

    Raises:
        SimclrWatchesError: the task would let a query find itself.
    """
    bad = leaks(task)
    if bad:
        raise SimclrWatchesError(f"task {task.name}: query {bad[0][0]} is also in the gallery as {bad[0][1]}")
    t0 = time.perf_counter()
    scores = method.score_queries(task.queries, method.embed_gallery(task.gallery))
    seconds = time.perf_counter() - t0
    m = score_rankings(scores, task.relevant, task.ignore)
    return MethodResult(summarize(m), recall_curve(m, 20).tolist(), seconds, m.first_hit,
                        _top_results(scores, task.ignore))


@dataclass
class Report:
    """Results of every method on every task of one protocol run."""

    protocol: str
    data: str
    seed: int
    tasks: list[Task]
    results: dict[str, dict[str, MethodResult]]  # task name -> method name -> result

    def to_json(self) -> dict:
        return {
            "protocol": self.protocol,
            "data": self.data,
            "seed": self.seed,
            "tasks": {
                t.name: {
                    "queries": len(t.queries),
                    "gallery": len(t.gallery),
                    "methods": {name: {**r.summary, "seconds": round(r.seconds, 2), "recall_curve": r.curve}
                                for name, r in self.results[t.name].items()},
                }
                for t in self.tasks
            },
        }

    def markdown(self) -> str:
        """One table per task: a row per method, the protocol's metric columns, and seconds."""
        parts = []
        for t in self.tasks:
            cols = COLUMNS[t.protocol]
            first = next(iter(self.results[t.name].values()), None)
            scored = int(first.summary["queries"]) if first else 0
            left = f", {len(t.queries) - scored} without a relevant item left out" if scored < len(t.queries) else ""
            parts.append(f"**{t.name}** ({scored} queries{left}, gallery {len(t.gallery)})\n")
            parts.append("| method | " + " | ".join(cols) + " | s |")
            parts.append("|---" * (len(cols) + 2) + "|")
            for name, r in self.results[t.name].items():
                cells = [f"{r.summary[c]:.2f}" if c == "N-S" else f"{r.summary[c]:.3f}" for c in cols]
                parts.append(f"| {name} | " + " | ".join(cells) + f" | {r.seconds:.1f} |")
            parts.append("")
        return "\n".join(parts)


def run(protocol: str, tasks: list[Task], methods: Sequence[Method], data: str, seed: int = 0) -> Report:
    """Runs every method on every task (a method's embeddings are reused across its tasks)."""
    results: dict[str, dict[str, MethodResult]] = {t.name: {} for t in tasks}
    for method in methods:
        for t in tasks:
            results[t.name][method.name] = run_task(t, method)
    return Report(protocol, data, seed, tasks, results)


def build_tasks(protocol: str, data: Path, *, severities: Sequence[str] = ("mild", "medium", "hard"),
                cache_dir: Path | None = None, kind: str | None = None, limit: int | None = None,
                seed: int = 0) -> list[Task]:
    """The tasks of a ranking protocol (all but ``attributes``).

    Raises:
        SimclrWatchesError: unknown protocol, or bad data for it.
    """
    if protocol == "groups":
        return [groups_task(data, kind, limit, seed)]
    if protocol == "catalog-photo":
        return [catalog_photo_task(data, limit, seed)]
    if protocol == "photo":
        if cache_dir is None:
            raise SimclrWatchesError("the photo protocol needs a folder for its simulated queries")
        return photo_tasks(data, severities, cache_dir, kind, limit, seed)
    raise SimclrWatchesError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")


def attribute_agreement(csv_path: Path, methods: Sequence[Method], k: int = 10,
                        columns: Sequence[str] | None = None) -> dict:
    """Share of each query's top-k results that agree with it on each attribute.

    Every image of the CSV (column ``path``, relative to the CSV) queries all
    others; itself and byte-identical copies are excluded. Ties keep CSV order.
    A query with an empty value is skipped for that attribute; a result with an
    empty value disagrees. ``chance`` is the same share for a random ranking:
    the mean share of the other images that agree with the query.

    Returns:
        ``{"k": k, "queries": n, "attributes": [...], "methods": {name: {attr: share}}, "chance": {attr: share}}``.

    Raises:
        SimclrWatchesError: missing columns or images, unknown attribute column.
    """
    csv_path = Path(csv_path)
    rows = _read_csv(csv_path, ["path", *(columns or [])])
    attrs = list(columns or [c for c in rows[0] if c != "path"])
    if not attrs:
        raise SimclrWatchesError(f"{csv_path}: no attribute columns besides 'path'")
    paths = _resolve_rows(csv_path, rows)
    ignore = _identical(paths, paths)
    values = {a: np.array([r[a] for r in rows], object) for a in attrs}
    agree = {a: (values[a][:, None] == values[a][None, :]) & (values[a][None, :] != "") for a in attrs}
    has = {a: values[a] != "" for a in attrs}
    others = np.maximum((~ignore).sum(1), 1)
    out = {"k": k, "queries": len(paths), "attributes": attrs, "methods": {},
           "chance": {a: float(((agree[a] & ~ignore).sum(1) / others)[has[a]].mean()) for a in attrs}}
    for method in methods:
        emb = method.embed_gallery(paths)
        top = _top_results(method.score_queries(paths, emb), ignore, k)
        out["methods"][method.name] = {
            a: float(np.take_along_axis(agree[a], top, 1).mean(1)[has[a]].mean()) for a in attrs
        }
    return out


def attributes_markdown(res: dict) -> str:
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
