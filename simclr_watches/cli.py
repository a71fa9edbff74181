"""The ``simclr-watches`` command line: thin commands that validate input and call library functions.

Results go to stdout; progress, warnings and errors go to stderr. A
SimclrWatchesError, or an OSError (disk full, permission denied, a folder where a
file was expected), becomes a one-line message and exit code 2.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable, List, Optional

import typer
from rich.markup import escape

from simclr_watches.core.errors import NoReadableImagesError, SimclrWatchesError, one_line
from simclr_watches.core.progress import stderr
from simclr_watches.serve.settings import TOKEN_ENV, ServeSettings

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Visual similarity search for a watch catalog, learned without labels.")

# Options that several commands share, each declared once (typer copies an option for every command).
CheckpointOpt = typer.Option(
    None, "--checkpoint",
    help="Encoder: checkpoint file, registered name or ensemble A+B of them (default: the default model; "
         "for search, add, serve and build-index --update: the index's own).",
)
BatchSizeOpt = typer.Option(32, "--batch-size", min=1, help="Images per forward pass.")
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (auto: a GPU if there is one; under torchrun: each process's own).")
ForceOpt = typer.Option(False, "--force", help="Replace outputs that simclr-watches wrote there earlier (anything else is never replaced).")


def _print_error(message: str) -> None:
    """``error: MESSAGE`` on stderr, on one line; the message is text, never rich markup (paths may hold [ ])."""
    stderr.print(f"[red]error:[/red] {escape(one_line(message))}", highlight=False)


def _note(text: str) -> None:
    """A progress or result note on stderr, printed as plain text (paths may hold rich markup like [/x])."""
    stderr.print(text, markup=False, highlight=False)


def _print_skipped(path: Path | str, reason: str) -> None:
    """``skipped PATH: REASON`` on stderr, for a file left out of a catalog."""
    stderr.print(f"[yellow]skipped[/yellow] {escape(one_line(f'{path}: {reason}'))}", highlight=False)


def _os_error_message(e: OSError) -> str:
    """An OSError in words, naming its file(s): ``PATH: No space left on device``."""
    files = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    reason = e.strerror or str(e) or type(e).__name__
    return f"{files}: {reason}" if files else reason


def _user_errors(fn: Callable) -> Callable:
    """Turns user-facing errors into one line on stderr and exit code 2.

    Those are SimclrWatchesError (a folder of unreadable images first lists why each
    was skipped) and OSError escaping a command: the disk, permissions or the file
    system refusing what the user asked for. Any other exception is a bug and keeps
    its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SimclrWatchesError as e:
            if isinstance(e, NoReadableImagesError):
                for skipped in e.skipped:
                    _print_skipped(skipped.path, skipped.reason)
            _print_error(str(e))
            raise typer.Exit(2) from None
        except OSError as e:
            _print_error(_os_error_message(e))
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            stderr.print("interrupted; nothing half-written was kept")
            raise typer.Exit(130) from None

    return wrapper


@app.command("build-index")
@_user_errors
def build_index_cmd(
    catalog: Path = typer.Argument(..., help="Folder of catalog images (searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Index folder to write."),
    checkpoint: Optional[str] = CheckpointOpt,
    batch_size: int = BatchSizeOpt,
    device: str = DeviceOpt,
    n_trees: int = typer.Option(50, min=1, help="Annoy trees: more is more exact and larger (10 are enough at a million items: docs/BENCHMARKS.md)."),
    pca: int = typer.Option(512, min=0, help="Store vectors this wide: a PCA fitted on the catalog (0: keep the model's width; a catalog of this many images or fewer keeps it too)."),
    whiten: bool = typer.Option(False, "--whiten", help="Whiten the PCA (axes scaled to unit variance)."),
    crop: bool = typer.Option(True, "--crop/--no-crop", help="Crop each photo around the watch (its non-white foreground) before embedding."),
    force: bool = ForceOpt,
    update: bool = typer.Option(False, "--update", help="Bring an existing index up to date with the catalog: embed only new or changed files, drop deleted ones (the index keeps its model, crop, PCA and trees)."),
) -> None:
    """Embed a catalog folder and write an Annoy index with its JSON sidecar (--force: once the new one is complete).

    Under torchrun (torchrun --nproc_per_node N -m simclr_watches build-index ...) each process embeds a
    shard, and a killed run resumes without embedding the finished shards again."""
    from simclr_watches.retrieval.index import SIDECAR_FILE, build_index

    if update and force:
        raise SimclrWatchesError("--update changes the index in place; --force rebuilds it: give one of them")
    if update and (out / SIDECAR_FILE).exists():
        from simclr_watches.retrieval.update import update_index

        _report_update(update_index(catalog, out, checkpoint=checkpoint, batch_size=batch_size, device=device,
                                    progress=True))
        return
    from simclr_watches.core.distributed import dist_from_env

    info = dist_from_env()
    if info.world > 1:  # under torchrun: a shard per process, rank 0 merges
        from simclr_watches.retrieval.shards import build_sharded

        report = build_sharded(catalog, out, info, checkpoint=checkpoint, batch_size=batch_size, device=device,
                               n_trees=n_trees, pca=pca, whiten=whiten, crop=crop, force=force, progress=True)
    else:
        report = build_index(catalog, out, checkpoint=checkpoint, batch_size=batch_size, device=device,
                             n_trees=n_trees, pca=pca, whiten=whiten, crop=crop, force=force)
    if report is None:  # a torchrun process other than rank 0: its shard is in, rank 0 reports
        return
    for note in report.shards:
        _note(note)
    for path, reason in report.skipped:
        _print_skipped(path, reason)
    _note(
        f"indexed {report.count} images with {report.model.id} into {report.directory}"
        + (f"; skipped {len(report.skipped)} unreadable file(s)" if report.skipped else ""),
    )


def _report_update(report) -> None:
    """An update's items on stdout (one JSON line each: ``{"added"|"removed": {id, path, ...}}``), a summary on
    stderr; exit 1 when some inputs could not be used (after the others were)."""
    for what, records in (("added", report.added), ("removed", report.removed)):
        for record in records:
            typer.echo(json.dumps({what: record}))
    for given, reason in report.unchanged:
        _note(f"unchanged {given}: {reason}")
    for given, reason in report.skipped:
        _print_skipped(given, reason)
    _note(f"{report.directory}: added {len(report.added)} (embedded {report.embedded}), removed {len(report.removed)}"
          + (", compacted" if report.compacted else "")
          + f"; {report.live} live items, {report.pending_added} added and {report.pending_removed} removed since the "
            "forest was built")
    if report.skipped:
        _note(f"{len(report.skipped)} input(s) could not be used")
        raise typer.Exit(1)


@app.command()
@_user_errors
def add(
    index: Path = typer.Argument(..., help="Index folder written by build-index."),
    photos: List[Path] = typer.Argument(..., help="Image files and/or folders of them to add."),
    checkpoint: Optional[str] = CheckpointOpt,
    batch_size: int = BatchSizeOpt,
    device: str = DeviceOpt,
) -> None:
    """Add photos to an index without rebuilding it (embedded with the index's own model; exit 1 if some are unreadable)."""
    from simclr_watches.retrieval.update import add_items

    _report_update(add_items(index, photos, batch_size=batch_size, device=device, progress=True, checkpoint=checkpoint))


@app.command()
@_user_errors
def remove(
    index: Path = typer.Argument(..., help="Index folder written by build-index."),
    items: List[str] = typer.Argument(..., help="Item ids (numbers, as search --json gives them) and/or the paths of indexed files."),
) -> None:
    """Remove items from an index: hidden from every result at once, dropped at the next compaction (exit 1 if some are unknown)."""
    from simclr_watches.retrieval.update import remove_items

    _report_update(remove_items(index, [int(s) if s.isdigit() else s for s in items]))


@app.command()
@_user_errors
def compact(index: Path = typer.Argument(..., help="Index folder written by build-index.")) -> None:
    """Rebuild an index's forest from its stored vectors (no re-embedding, ids kept) after adds and removals."""
    from simclr_watches.retrieval.update import compact as compact_index

    _report_update(compact_index(index))


@app.command()
@_user_errors
def search(
    queries: List[Path] = typer.Argument(..., help="Query image files and/or folders of them."),
    index: Path = typer.Option(..., "--index", "-i", help="Index folder written by build-index."),
    top_k: int = typer.Option(10, "--top-k", "-k", min=1, help="Results per query."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per query per line, nothing else on stdout."),
    checkpoint: Optional[str] = CheckpointOpt,
    localize: bool = typer.Option(True, "--localize/--no-localize", help="Find the watch in the photo (--locate says how)."),
    locate: str = typer.Option("box", "--locate", help="How the watch is found: box (the learnt box head; windows for a model it was not trained on) or windows (multi-scale windows)."),
    box_head: Optional[str] = typer.Option(None, "--box-head", help="With --locate box: a box head file or registered name (default: the shipped one)."),
    sheet: Optional[Path] = typer.Option(None, help="Also write a contact sheet PNG (and an .html beside it)."),
    force: bool = ForceOpt,
    batch_size: int = BatchSizeOpt,
    device: str = DeviceOpt,
) -> None:
    """Find the catalog items most similar to each query photo."""
    from simclr_watches.data.images import expand_inputs
    from simclr_watches.retrieval.search import Searcher, locate_config
    from simclr_watches.retrieval.sheet import check_sheet, write_sheet

    cfg = locate_config(locate, box_head) if localize else None
    if sheet is not None:
        check_sheet(sheet, force=force, inputs=[*queries, index])  # before any work
    searcher = Searcher(index, checkpoint=checkpoint, device=device, localize=cfg)
    results = searcher.search(expand_inputs(queries), top_k=top_k, batch_size=batch_size)
    failed = 0
    for r in results:
        if r.error:
            failed += 1
            _print_error(r.error)
            continue
        if as_json:
            typer.echo(json.dumps(r.to_json()))
        else:
            _print_table(r)
    if sheet is not None and failed < len(results):
        files = write_sheet(results, sheet, force=force, inputs=[*queries, index])
        _note(f"contact sheet: {', '.join(map(str, files))}")
    if failed:
        _note(f"{failed} of {len(results)} queries failed")
        raise typer.Exit(1)


def _print_table(r) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=r.query, title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    table.add_column("path", overflow="fold")
    for h in r.hits:
        table.add_row(str(h.rank), f"{h.score:.4f}", h.path)
    Console().print(table)


@app.command()
@_user_errors
def synth(
    out_dir: Path = typer.Argument(..., help="Folder to write images/ and attributes.csv into."),
    n: int = typer.Option(200, "--n", min=1, help="Number of watches."),
    seed: int = typer.Option(0, help="Same seed, same files."),
    size: int = typer.Option(256, min=32, help="Image side in pixels."),
    force: bool = ForceOpt,
) -> None:
    """Render a synthetic watch catalog with known attributes (shape, colours, strap); prints the CSV path."""
    from simclr_watches.data.synth import make_catalog

    typer.echo(str(make_catalog(out_dir, n, seed=seed, size=size, force=force)))


@app.command()
@_user_errors
def download(
    name: Optional[str] = typer.Argument(None, help="Registered model name (configs/weights.toml)."),
    url: Optional[str] = typer.Option(None, help="Download address (overrides the registry's; needed for an unregistered file)."),
    sha256: Optional[str] = typer.Option(None, help="Expected sha256 (required with --url for an unregistered file)."),
    timeout: float = typer.Option(30.0, min=0.1, help="Seconds without data before the server counts as stalled."),
) -> None:
    """Download weights into the cache ($SIMCLR_WATCHES_HOME), verified by size and sha256; prints the path."""
    from simclr_watches.weights import download as fetch_weights

    if not name and not url:
        raise SimclrWatchesError("give a registered NAME or --url with --sha256")
    typer.echo(str(fetch_weights(name, url=url, sha256=sha256, timeout=timeout)))


@app.command()
@_user_errors
def models() -> None:
    """List the registered models (configs/weights.toml): which is the default and whether its file is here."""
    from rich.console import Console
    from rich.table import Table

    from simclr_watches.weights import list_models

    table = Table(title="registered models (configs/weights.toml)", title_justify="left")
    for col in ("name", "arch", "MB", "status", "description"):
        table.add_column(col, overflow="fold", justify="right" if col == "MB" else "left")
    for m in list_models():
        name = f"{m['name']} (default)" if m["default"] else m["name"]
        table.add_row(name, m["arch"], f"{m['size'] / 1e6:.1f}", m["status"], m["description"])
    Console().print(table)


@app.command()
@_user_errors
def export(
    checkpoint: Path = typer.Argument(..., help="An encoder checkpoint, e.g. RUN_DIR/encoder.safetensors."),
    out: Path = typer.Option(..., "--out", "-o", help="File to write (.safetensors); its JSON description goes beside it."),
    fp32: bool = typer.Option(False, "--fp32", help="Keep float32 weights (default: float16, half the size)."),
    metrics: Optional[Path] = typer.Option(None, help="JSON file of evaluation results to store in the description."),
    force: bool = ForceOpt,
) -> None:
    """Write a checkpoint for shipping: compact safetensors + JSON with sha256 and size for the registry."""
    from simclr_watches.core.files import read_json
    from simclr_watches.weights import check_export, export_encoder

    inputs = [metrics] if metrics is not None else []
    check_export(checkpoint, out, force=force, inputs=inputs)
    extra = None if metrics is None else read_json(metrics)
    desc = export_encoder(checkpoint, out, half=not fp32, metrics=extra, force=force, inputs=inputs)
    typer.echo(json.dumps({k: desc[k] for k in ("file", "sha256", "size", "arch", "embedding_dim")}, indent=2))


@app.command()
@_user_errors
def pretrain(
    catalog: Path = typer.Argument(..., help="Folder of catalog images (searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoint.pt, encoder.safetensors, metrics.jsonl."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Pretraining config TOML (default: built-in defaults). Not read with --resume."),
    overrides: List[str] = typer.Option([], "--set", help="Override a config key, e.g. --set train.epochs=50 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out with its stored config, optimizer and RNG state."),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", min=0, help="Stop, with a checkpoint, before an epoch that would end more than this many seconds after the start; --resume continues."),
    force: bool = ForceOpt,
    device: str = DeviceOpt,
) -> None:
    """SimCLR-pretrain the encoder on a catalog, without labels (torchrun for several GPUs).

    --force starts afresh in an --out that holds an earlier run (its files are removed).
    """
    from simclr_watches.train.config import load_pretrain_config
    from simclr_watches.train.run import ENCODER_FILE, run_config, run_pretraining

    cfg = run_config(out, overrides) if resume else load_pretrain_config(config, overrides)
    result = run_pretraining(catalog, out, cfg, resume=resume, force=force, device=device, time_limit=time_limit)
    if result.metrics and (result.run_dir / ENCODER_FILE).exists():
        last = result.metrics[-1]
        _note(
            f"epoch {last['epoch']}: loss {last['loss']:.4f}, retrieval proxy {last['proxy_top1']:.3f}; "
            f"encoder written to {result.run_dir / ENCODER_FILE}",
        )


@app.command("train-box")
@_user_errors
def train_box(
    out: Path = typer.Option(..., "--out", "-o", help="The box head file to write (.safetensors; its .json description beside it)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Box training config TOML (e.g. configs/box-lite0.toml)."),
    overrides: List[str] = typer.Option([], "--set", help="Override a config key, e.g. --set train.epochs=10 (repeatable)."),
    force: bool = ForceOpt,
) -> None:
    """Train the box head that finds the watch in a photo, on composites of the catalog's packshots (CPU)."""
    from simclr_watches.detect.config import load_box_config
    from simclr_watches.detect.train import run_box_training

    desc = run_box_training(load_box_config(config, overrides), out, force=force, log=_note)
    test = desc["meta"]["test"]
    _note(f"held-aside composites: mean IoU {test['mean_iou']:.3f}, IoU >= 0.5 {test['iou50']:.3f}; written to {out}")
    typer.echo(json.dumps({k: desc[k] for k in ("file", "sha256", "size")}, indent=2))


@app.command("augment-preview")
@_user_errors
def augment_preview(
    catalog: Path = typer.Argument(..., help="Folder of catalog images."),
    out: Path = typer.Option(..., "--out", "-o", help="PNG file to write."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Pretraining config TOML whose [augment] to show."),
    overrides: List[str] = typer.Option([], "--set", help="Override a config key, e.g. --set augment.background_p=1"),
    count: int = typer.Option(8, "--count", "-n", min=1, help="Catalog photos to show (spread over the catalog)."),
    seed: int = typer.Option(0, help="Random seed of the views."),
    force: bool = ForceOpt,
) -> None:
    """Write a grid of catalog photos next to two augmented views of each."""
    from simclr_watches.train.config import load_pretrain_config
    from simclr_watches.train.preview import write_augment_preview

    path = write_augment_preview(catalog, out, load_pretrain_config(config, overrides), n=count, seed=seed, force=force)
    _note(f"wrote {path}")


@app.command()
@_user_errors
def demo(
    out: Path = typer.Option(Path("demo"), "--out", "-o", help="Folder for the demo's catalog, index, query and sheet."),
    catalog: Optional[Path] = typer.Option(None, help="Use this catalog folder instead of rendering synthetic watches."),
    n: int = typer.Option(60, "--n", min=2, help="Synthetic watches to render."),
    seed: int = typer.Option(0, help="Picks the catalog, the query watch and its simulated scene."),
    checkpoint: Optional[str] = CheckpointOpt,
    force: bool = ForceOpt,
) -> None:
    """Catalog -> index -> simulated user photo -> search -> contact sheet, on the CPU in minutes."""
    from simclr_watches.demo import run_demo

    res = run_demo(out, catalog, n=n, seed=seed, checkpoint=checkpoint, force=force)
    _print_table(res.result)
    rank = res.source_rank
    _note(
        f"query {res.query} is a simulated photo of {res.source}: "
        + (f"found at rank {rank}" if rank else "not in the top results")
        + f"\ncontact sheet: {', '.join(map(str, res.files))}"
        + f"\nsearch it in a web page: simclr-watches serve {res.index}  (then open http://127.0.0.1:8000/)",
    )


@app.command()
@_user_errors
def evaluate(
    data: Path = typer.Argument(..., help="Folder of sub-folders (groups, photo) or CSV (manifest, attributes)."),
    protocol: str = typer.Option(..., "--protocol", "-p", help="groups, catalog-photo, photo or attributes."),
    methods: str = typer.Option("hist,phash,thumb,imagenet,random",
                                help="Comma-separated: hist, phash, thumb, imagenet, random, or a checkpoint path/name."),
    out: Path = typer.Option(Path("runs/eval"), "--out", "-o", help="Folder for results.md, results.json and the plot."),
    plot: Optional[Path] = typer.Option(None, help="Recall@k plot PNG (default: OUT/recall_at_k.png)."),
    failures: Optional[Path] = typer.Option(None, help="Write an HTML page of the worst queries here."),
    severities: str = typer.Option("mild,medium,hard", help="photo protocol: comma-separated severities."),
    kind: Optional[str] = typer.Option(None, help="Manifest input: keep only rows of this kind (e.g. packshot)."),
    attributes: Optional[str] = typer.Option(None, help="attributes protocol: columns to score (default: all but path)."),
    top_k: int = typer.Option(10, "--top-k", "-k", min=1, help="attributes protocol: results per query."),
    limit: Optional[int] = typer.Option(None, min=1, help="Use at most N queries (a seeded sample)."),
    seed: int = typer.Option(0, help="Seed of the query sample, the simulator and the random encoder."),
    batch_size: int = BatchSizeOpt,
    device: str = DeviceOpt,
    force: bool = ForceOpt,
) -> None:
    """Measure retrieval quality of baselines and encoders; print a markdown table, write JSON and a plot.

    Without the eval extra (imagehash, matplotlib) the phash method is refused and the plot skipped.
    """
    from simclr_watches.evaluation import extras, report as rep
    from simclr_watches.evaluation.method_names import parse_methods
    from simclr_watches.evaluation.protocols import PROTOCOLS, build_tasks
    from simclr_watches.evaluation.runner import attribute_agreement, run

    if protocol not in PROTOCOLS:
        raise SimclrWatchesError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    ranking = protocol != "attributes"  # only ranking protocols draw the plot and the failures page
    drawn = ranking and extras.installed(extras.PLOT_MODULE)
    plot = (plot or out / rep.PLOT_FILE) if drawn else None
    failures = failures if ranking else None
    rep.check_outputs(out, plot=plot, failures=failures, force=force, inputs=[data])  # before any work
    chosen = parse_methods(methods, seed=seed, batch_size=batch_size, device=device)
    extras.check_method_modules(m.name for m in chosen)
    if protocol == "attributes":
        cols = [c.strip() for c in attributes.split(",") if c.strip()] if attributes else None
        res = attribute_agreement(data, chosen, top_k, cols)
        md, payload = rep.attributes_markdown(res), {"protocol": protocol, "data": str(data), **res}
    else:
        tasks = build_tasks(protocol, data, severities=[s.strip() for s in severities.split(",") if s.strip()],
                            cache_dir=out / rep.SIMULATED_DIR, kind=kind, limit=limit, seed=seed)
        report = run(protocol, tasks, chosen, str(data), seed)
        md, payload = rep.ranking_markdown(report), report.to_json()
        _note(f"plot: {rep.plot_recall(report, plot, force=force)}" if plot else extras.PLOT_SKIPPED)
        if failures:
            _note(f"failures: {rep.write_failures(report, failures, force=force)}")
    typer.echo(md)
    for path in rep.write_outputs(out, md, payload, force=force):
        _note(f"wrote {path}")


@app.command()
@_user_errors
def serve(
    index: Path = typer.Argument(..., help="Index folder to serve (written by build-index)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; anything but loopback is reachable from other machines."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port (0: any free one)."),
    enable_writes: bool = typer.Option(False, "--enable-writes", help="Allow adding and removing items and recording feedback, with a token."),
    token: Optional[str] = typer.Option(None, "--token", envvar=TOKEN_ENV, show_envvar=True,
                                        help="Token the write endpoints require (default with --enable-writes: a new one, printed)."),
    max_upload_bytes: int = typer.Option(ServeSettings.max_upload_bytes, min=1, help="Largest photo accepted, in bytes."),
    max_pixels: int = typer.Option(ServeSettings.max_pixels, min=1, help="Largest photo accepted, in pixels."),
    max_concurrent: int = typer.Option(ServeSettings.max_concurrent, min=1, help="Photos read or searched at once; more requests get 503 (busy)."),
    upload_timeout: float = typer.Option(ServeSettings.upload_timeout_s, min=0.001,
                                         help="Seconds a request may take to send its photos; slower: 408."),
    localize: bool = typer.Option(True, "--localize/--no-localize", help="Find the watch in the photo with the learnt box, as search does."),
    checkpoint: Optional[str] = CheckpointOpt,
    device: str = DeviceOpt,
) -> None:
    """Serve a page and a JSON API to search the index by photo (docs/SERVE.md); Ctrl-C stops it."""
    from simclr_watches.serve.app import create_app
    from simclr_watches.serve.server import bind, is_loopback, page_url, run
    from simclr_watches.serve.settings import new_token

    generated = enable_writes and not token
    settings = ServeSettings(max_upload_bytes=max_upload_bytes, max_pixels=max_pixels, max_concurrent=max_concurrent,
                             enable_writes=enable_writes, token=(new_token() if generated else token) if enable_writes else None,
                             localize=localize, upload_timeout_s=upload_timeout)
    if not is_loopback(host):
        stderr.print(f"[yellow]warning:[/yellow] {escape(host)} is reachable from other machines: anyone who can reach "
                     f"it can search the catalog{' and, with the token, change it' if enable_writes else ''}", highlight=False)
    sock = bind(host, port)
    web = create_app(index, settings, checkpoint=checkpoint, device=device)
    _note(f"serving {index} ({web.state.service.searcher.index.live_count} items); writes "
          + ("enabled" + (f", token {settings.token}" if generated else "") if enable_writes else "disabled"))
    _note(f"open {page_url(sock, settings.token if generated else None)}")
    run(web, sock)


@app.command()
@_user_errors
def info(path: Path = typer.Argument(..., help="An index folder or an encoder checkpoint file.")) -> None:
    """Describe an index folder or a checkpoint (model, preprocessing, size) as JSON."""
    from simclr_watches.retrieval.index import SIDECAR_FILE, load_index
    from simclr_watches.weights import read_header

    if path.is_dir():
        index = load_index(path)
        meta = index.meta
        summary = {k: v for k, v in meta.items() if k not in ("added", "removed", "skipped")}
        summary["skipped"] = len(meta.get("skipped", []))
        summary.update(live=index.live_count, added=index.added_count, removed=index.removed_count)
        summary["sidecar"] = str(path / SIDECAR_FILE)
        typer.echo(json.dumps(summary, indent=2))
    elif path.is_file():
        typer.echo(json.dumps(read_header(path), indent=2))
    else:
        raise SimclrWatchesError(f"{path}: no such file or folder")


if __name__ == "__main__":  # pragma: no cover
    app()
