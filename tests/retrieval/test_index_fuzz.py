"""Seeded fuzz of an index folder (issue 12): whatever the folder holds, opening it works or is one error line.

Each mutation damages a copy of a small valid index (a sidecar field removed, retyped,
out of range, huge or nested garbage; format 3's file names, added records, removed ids,
projection and counts; the sidecar truncated or not JSON; the forest, its rows, the added
rows, the PCA or an item column truncated, swapped with another index's, emptied, removed or
rewritten). Index ``a`` has a PCA, added rows and removed items, so every part of format 3
is there to damage. The checks that run once per file (retrieval/verified.py) never skip
here: every file is freshly written, too recent to be remembered. Opening the copy (:func:`load_index`, then, on success, what ``Searcher``
uses: a query of the forest, the paths, the preprocessing on an image, the crop margin,
the stored vectors, the model check, ``info``'s summary) must either work or raise an
:class:`IndexFormatError` of one line naming the file, never another exception.

The loop runs in a subprocess (this file run as a script) so that its peak memory
(``ru_maxrss``) is its own: it must stay within a fixed bound of the baseline taken
after setup, and a runaway allocation meets an address-space limit instead of the
machine's memory.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

SEED = 12
MUTATIONS = 600
MAX_GROWTH_MB = 150  # peak memory of the whole loop over its baseline
ADDRESS_SPACE_HEADROOM = 2 << 30  # a runaway allocation fails with MemoryError instead of exhausting the machine
GARBAGE: list[Any] = [None, True, False, 0, -1, 1, 0.5, -0.0, 2**31, 2**63, -(2**63), 10**30, 10**400, 1e308,
                      -1e308, float("nan"), float("inf"), "", "x", "a" * 5000, "\n\0\u2028", [], {}, [1, 2, 3],
                      [[[[[]]]]], {"a": {"b": [None, {"c": []}]}}, [0] * 1000]
DEEP = "<<deep>>"  # replaced by 5000 nested lists in the file's text


def _unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def build_bases(root: Path) -> dict[str, Path]:
    """Three small valid indexes: ``a`` (the one mutated), ``b`` (same shape, other vectors), ``c`` (other shape)."""
    from simclr_watches.retrieval.embed import EmbeddedItem
    from simclr_watches.retrieval.index import fit_projection, write_index
    from simclr_watches.model import Preprocessing
    from simclr_watches.weights import ModelInfo

    rng = np.random.default_rng(SEED)
    from simclr_watches.retrieval.index import load_index
    from simclr_watches.retrieval.update import apply_change

    out = {}
    # a: 40 items split into trees of depth > 1, 16-d embeddings stored 8-d by a PCA; c: no PCA, other width.
    for name, n, dim, width in (("a", 40, 16, 8), ("b", 40, 16, 8), ("c", 12, 16, 0)):
        items = [EmbeddedItem(Path(f"/catalog/{name}{i}.jpg"), f"{i:064x}", 100 + i) for i in range(n)]
        model = ModelInfo("m.safetensors", "ab" * 32, "resnet18", dim, Preprocessing(size=32))
        vectors = _unit_rows(rng, n, dim)
        projection = fit_projection(vectors, width)
        rows = vectors if projection is None else projection.apply(vectors)
        out[name] = write_index(root / name, rows, items, model, Preprocessing(size=32), n_trees=3,
                                projection=projection, skipped=[("/catalog/bad.jpg", "empty file")],
                                extra={"catalog_view": {"crop": "foreground", "margin": 0.05}})
        # 4 rows added since the forest was built, 3 items removed: generation 2, the forest's files of
        # generation 1, added-2.npy
        index = load_index(out[name])
        new = [{"id": n + i, "path": f"/catalog/{name}new{i}.jpg", "sha256": f"{n + i:064x}", "bytes": 1} for i in range(4)]
        apply_change(index, new, index.project(_unit_rows(rng, 4, dim)), [1, 5, n + 2], compact=False)
    return out


# --- mutations: each damages the folder `d` and returns what it did ---------------------------------------------


def _containers(meta: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """Every (path, container) of the parsed sidecar, the document itself included."""
    found = [(path, meta)] if isinstance(meta, (dict, list)) else []
    children = meta.items() if isinstance(meta, dict) else enumerate(meta) if isinstance(meta, list) else []
    for key, value in children:
        found += _containers(value, path + (key,))
    return found


def _pick_slot(rng: random.Random, meta: Any) -> tuple[tuple, Any, Any]:
    """A random (path, container, key) of the sidecar, favouring the top-level fields and items[0]."""
    spots = [(p, c) for p, c in _containers(meta) if len(c)]
    path, container = rng.choice(spots[:4] * 3 + spots)
    key = rng.choice(list(container)) if isinstance(container, dict) else rng.randrange(len(container))
    return path, container, key


def _write_sidecar(d: Path, meta: Any) -> None:
    text = json.dumps(meta)
    (d / "index.json").write_text(text.replace(json.dumps(DEEP), "[" * 5000 + "]" * 5000), encoding="utf-8")


def _sidecar(d: Path) -> Any:
    return json.loads((d / "index.json").read_text(encoding="utf-8"))


def mutate_field(rng: random.Random, d: Path, bases: dict[str, Path]) -> str:
    """A field (at any depth) removed or given a garbage value."""
    meta = _sidecar(d)
    path, container, key = _pick_slot(rng, meta)
    if rng.random() < 0.3:
        del container[key]
        _write_sidecar(d, meta)
        return f"removed {path + (key,)}"
    value = rng.choice(GARBAGE + [DEEP])
    container[key] = value
    _write_sidecar(d, meta)
    return f"set {path + (key,)} to {str(value)[:30]!r}"


def mutate_number(rng: random.Random, d: Path, bases: dict[str, Path]) -> str:
    """A numeric field set just out of range, far out of range, or to a neighbour of its value."""
    meta = _sidecar(d)
    numeric = [(c, k) for _, c in _containers(meta) for k, v in (c.items() if isinstance(c, dict) else enumerate(c))
               if isinstance(v, (int, float)) and not isinstance(v, bool)]
    container, key = rng.choice(numeric)
    old = container[key]
    container[key] = rng.choice([old + 1, old - 1, -old, 0, old * 1000, 100000, 10**9, 2**40, 1e-30, 1e30])
    _write_sidecar(d, meta)
    return f"number {key!r} {old} -> {container[key]}"


def mutate_named(rng: random.Random, d: Path, bases: dict[str, Path]) -> str:
    """The defects of issue 12 point 2, among others of the same kind."""
    meta = _sidecar(d)
    name, change = rng.choice(list(NAMED.items()))
    meta = change(meta)
    _write_sidecar(d, meta)
    return name


def _set(field: str, value: Any) -> Callable[[dict], dict]:
    def change(meta: dict) -> dict:
        target = meta
        *parents, last = field.split(".")
        for p in parents:
            target = target[p]
        target[last] = value
        return meta

    return change


NAMED: dict[str, Callable[[Any], Any]] = {
    "size 100000": _set("preprocessing.size", 100000),
    "size 0": _set("preprocessing.size", 0),
    "std zeros": _set("preprocessing.std", [0, 0, 0]),
    "std 2 channels": _set("preprocessing.std", [0.5, 0.5]),
    "mean nan": _set("preprocessing.mean", [float("nan"), 0, 0]),
    "pad 256": _set("preprocessing.pad_value", 256),
    "added short": lambda m: {**m, "added": m["added"][:-1]},
    "added record without path": lambda m: {**m, "added": [{k: v for k, v in it.items() if k != "path"}
                                                           for it in m["added"]]},
    "added path a lone surrogate": lambda m: {**m, "added": [{**m["added"][0], "path": "/c/\ud800.jpg"},
                                                             *m["added"][1:]]},
    "added path huge": lambda m: {**m, "added": [{**m["added"][0], "path": "/" + "x" * 20000}, *m["added"][1:]]},
    "json list": lambda m: [m],
    "count huge": _set("count", 10**12),
    "dim huge": _set("dim", 10**9),
    "n_trees huge": _set("n_trees", 10**9),
    "model dim off": _set("model.dim", 17),
    "margin inf": _set("catalog_view.margin", float("inf")),
    "crop unknown": _set("catalog_view.crop", "circle"),
    "metric euclidean": _set("metric", "euclidean"),
    "members bad dims": _set("model.members", [{"id": "x", "sha256": "0" * 64, "arch": "r", "dim": 1}] * 2),
    "unknown field deep": _set("extra", DEEP),
    "unknown field": _set("note", {"a": [1, 2]}),
    "forest named by a path": _set("files.forest", "../b/forest-1.ann"),
    "rows named by an absolute path": _set("files.vectors", "/etc/passwd"),
    "added named as a forest": _set("files.added", "forest-1.ann"),
    "unknown file role": _set("files.extra", "added-2.npy"),
    "file of a later generation": _set("generation", 1),
    "added file dropped": lambda m: {**m, "files": {k: v for k, v in m["files"].items() if k != "added"}},
    "column file dropped": lambda m: {**m, "files": {k: v for k, v in m["files"].items() if k != "offsets"}},
    "columns named as each other": _set("files.ids", "sizes-1.npy"),
    "paths named as sha256": _set("files.paths", "sha256-1.npy"),
    "projection file dropped": lambda m: {**m, "files": {k: v for k, v in m["files"].items() if k != "projection"}},
    "projection field dropped": lambda m: {k: v for k, v in m.items() if k != "projection"},
    "projection method unknown": _set("projection.method", "ica"),
    "projection input_dim off": _set("projection.input_dim", 15),
    "projection wider than the model": _set("dim", 16),
    "forest_dim wider than the rows": _set("forest_dim", 9),
    "forest_dim 0": _set("forest_dim", 0),
    "forest_dim narrower than the forest": _set("forest_dim", 4),
    "forest_dim dropped": lambda m: {k: v for k, v in m.items() if k != "forest_dim"},
    "forest_count too large": _set("forest_count", 10**6),
    "forest_count = count": lambda m: {**m, "forest_count": m["count"]},
    "forest_count smaller": lambda m: {**m, "forest_count": m["forest_count"] - 1},
    "duplicate added id": lambda m: {**m, "added": [m["added"][1], *m["added"][1:]]},
    "added id of a forest item": lambda m: {**m, "added": [{**m["added"][0], "id": 39}, *m["added"][1:]]},
    "id past next_id": lambda m: {**m, "next_id": m["next_id"] - 1},
    "negative added id": lambda m: {**m, "added": [{**m["added"][0], "id": -1}, *m["added"][1:]]},
    "removed false": _set("removed", False),
    "removed not ascending": lambda m: {**m, "removed": m["removed"][::-1]},
    "removed twice": lambda m: {**m, "removed": [m["removed"][0], *m["removed"]]},
    "removed id of no item": lambda m: {**m, "removed": [*m["removed"], m["next_id"] + 5], "next_id": m["next_id"] + 9},
    "removed too many": lambda m: {**m, "removed": list(range(200_000))},
    "everything removed": lambda m: {**m, "removed": list(range(m["next_id"]))},
    "updated not a time": _set("updated", "yesterday"),
}


def mutate_sidecar_bytes(rng: random.Random, d: Path, bases: dict[str, Path]) -> str:
    """The sidecar truncated, emptied, not JSON, not UTF-8, removed, or a folder."""
    f = d / "index.json"
    raw = f.read_bytes()
    kind = rng.choice(["truncate", "empty", "random", "latin1", "remove", "folder", "swap-c"])
    if kind == "truncate":
        f.write_bytes(raw[: rng.randrange(len(raw))])
    elif kind == "empty":
        f.write_bytes(b"")
    elif kind == "random":
        f.write_bytes(rng.randbytes(rng.randrange(1, 2000)))
    elif kind == "latin1":
        f.write_bytes(raw.replace(b"catalog", b"cat\xe9log"))
    elif kind == "remove":
        f.unlink()
    elif kind == "folder":
        f.unlink()
        f.mkdir()
    else:
        shutil.copy(bases["c"] / "index.json", f)
    return f"index.json {kind}"


def _mutate_file(rng: random.Random, f: Path, bases: dict[str, Path], extra: dict[str, Callable[[Path], None]]) -> str:
    """Damage shared by the forest and the row files, plus the file's own ``extra`` kinds."""
    raw = f.read_bytes()
    kinds = ["truncate", "empty", "remove", "swap-b", "swap-c", "random", "overwrite", "append", *extra]
    kind = rng.choice(kinds)
    if kind == "truncate":
        f.write_bytes(raw[: rng.randrange(len(raw))])
    elif kind == "empty":
        f.write_bytes(b"")
    elif kind == "remove":
        f.unlink()
    elif kind.startswith("swap"):
        other = bases[kind[-1]] / f.name  # every base has the same file names, but c has no PCA
        shutil.copy(other if other.exists() else bases["b"] / f.name, f)
    elif kind == "random":
        f.write_bytes(rng.randbytes(len(raw)))
    elif kind == "overwrite":  # a few int32s of garbage anywhere (an Annoy node's links, a .npy header byte)
        buf = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(0, len(buf) - 4)
            buf[at : at + 4] = rng.choice([b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\x00\x00\x00\x00",
                                           rng.randbytes(4)])
        f.write_bytes(bytes(buf))
    elif kind == "append":
        f.write_bytes(raw + rng.randbytes(rng.choice([4, 76, 1000])))
    else:
        extra[kind](f)
    return f"{f.name} {kind}"


def mutate_forest(rng: random.Random, d: Path, bases: dict[str, Path]) -> str:
    """forest-1.ann damaged, including a node-aligned truncation (roots cut off, no size mismatch)."""
    node = 12 + 4 * _sidecar(d)["dim"]

    def cut_nodes(f: Path) -> None:
        raw = f.read_bytes()
        f.write_bytes(raw[: node * rng.randrange(1, len(raw) // node)])

    return _mutate_file(rng, d / "forest-1.ann", bases, {"cut-nodes": cut_nodes})


def mutate_embeddings(rng: random.Random, d: Path, bases: dict[str, Path]) -> str:
    """The forest's rows or the added rows damaged, or rewritten as another dtype, shape, order, a pickle, or with bad rows."""
    f = d / rng.choice(["vectors-1.npy", "added-2.npy"])
    vectors = np.load(f)

    def save(array: np.ndarray, **kw: Any) -> Callable[[Path], None]:
        return lambda f: np.save(f, array, **kw)

    def bad_row(value: float) -> np.ndarray:
        v = vectors.copy()
        v[rng.randrange(len(v))] = value
        return v

    extra = {
        "float64": save(vectors.astype(np.float64)),
        "transposed": save(np.ascontiguousarray(vectors.T)),
        "fortran": save(np.asfortranarray(vectors)),
        "pickle": save(np.array([{"a": 1}] * len(vectors), dtype=object), allow_pickle=True),
        "nan-row": save(bad_row(float("nan"))),
        "zero-row": save(bad_row(0.0)),
        "one-row-fewer": save(vectors[:-1]),
        "3d": save(vectors[None]),
    }
    return _mutate_file(rng, f, bases, extra)


def mutate_columns(rng: random.Random, d: Path, bases: dict[str, Path]) -> str:
    """An item column or the PCA damaged, or rewritten with values no index has."""
    f = d / rng.choice(["ids-1.npy", "sha256-1.npy", "sizes-1.npy", "offsets-1.npy", "paths-1.npy",
                        "projection-1.npy"])
    array = np.load(f)

    def changed(edit: Callable[[np.ndarray], None], dtype: Any = None) -> Callable[[Path], None]:
        def write(f: Path) -> None:
            a = array.astype(dtype or array.dtype)
            edit(a)
            np.save(f, a)
        return write

    def at(value: Any) -> Callable[[np.ndarray], None]:
        def edit(a: np.ndarray) -> None:
            a.reshape(-1)[rng.randrange(a.size)] = value
        return edit

    extra = {
        "reversed": changed(lambda a: a.__setitem__(slice(None), a[::-1].copy())),
        "value -1": changed(at(-1)) if array.dtype != np.uint8 else changed(at(0)),
        "value huge": changed(at(2**62)) if array.dtype == np.int64 else changed(at(255)),
        "nan": changed(at(float("nan")), np.float32) if array.dtype == np.float32 else changed(at(0)),
        "int32": changed(lambda a: None, np.int32),
        "one fewer": lambda f: np.save(f, array[:-1]),
        "2d": lambda f: np.save(f, array.reshape(len(array), -1)[None]),
    }
    return _mutate_file(rng, f, bases, extra)


MUTATORS = [(mutate_field, 5), (mutate_number, 2), (mutate_named, 3), (mutate_sidecar_bytes, 2),
            (mutate_forest, 2), (mutate_embeddings, 2), (mutate_columns, 3)]


# --- what opening must do ------------------------------------------------------------------------------------


def exercise(folder: Path) -> str:
    """Opens ``folder`` as search and info would; returns "ok" or "refused" (raises on anything else)."""
    from PIL import Image

    from simclr_watches.core.errors import IndexFormatError
    from simclr_watches.retrieval.index import load_index
    from simclr_watches.retrieval.scoring import AnnoyCandidates
    from simclr_watches.weights import ModelInfo

    try:
        index = load_index(folder)
    except IndexFormatError as e:
        _check_message(e, folder)
        return "refused"
    meta, dim = index.meta, index.meta["dim"]
    summary = {k: v for k, v in meta.items() if k not in ("added", "removed", "skipped")}
    json.dumps({**summary, "skipped": len(meta.get("skipped", []))}, indent=2)
    assert len(index.paths) == len(index) == index.vectors.shape[0]
    index.preprocessing.to_uint8(Image.new("RGB", (40, 30)))
    margin = index.crop_margin
    assert margin is None or 0 <= margin <= 1
    probe = np.asarray(index.vectors[len(index) // 2], np.float32)
    ids, scores = index.query(probe, 1000)
    assert len(ids) == index.live_count and all(np.isfinite(scores))
    assert all(0 <= i < len(index) and not index.is_hidden(i) for i in ids)
    cand = AnnoyCandidates(index.ann, 50, hidden=index.hidden_in_forest, always=index.live_added)(probe[None])
    assert not set(cand.tolist()) & set(index.hidden.tolist()) and np.isfinite(index.vectors[cand] @ probe).all()
    for r in range(len(index)):
        it = index.items[r]
        assert index.item(it["id"]) is None if it.get("removed") else index.item(it["id"])["path"] == it["path"]
    query = index.project(np.ones(meta["model"]["dim"], np.float32))
    assert query.shape == (dim,) and np.isfinite(query).all()
    ids, scores = index.query(query, 5)
    assert all(np.isfinite(scores))
    model = meta["model"]
    index.check_model(ModelInfo(model["id"], model["sha256"], model["arch"], model["dim"], index.preprocessing))
    try:
        index.check_model(ModelInfo("other", "0" * 64, "resnet18", dim, index.preprocessing))
    except IndexFormatError as e:
        _check_message(e, folder)
    return "ok"


def _check_message(e: Exception, folder: Path) -> None:
    msg = str(e)
    one_line = "\n" not in msg and msg.isprintable() and len(msg) < 10_000
    assert msg.startswith(str(folder)) and one_line, f"bad message: {msg!r}"


def run_fuzz(root: Path, seed: int = SEED, n: int = MUTATIONS) -> dict[str, Any]:
    """The mutation loop: outcomes, failures (mutation and error) and peak memory before and after."""
    bases = build_bases(root / "bases")
    assert exercise(bases["a"]) == "ok"
    rng = random.Random(seed)
    _limit_address_space()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcomes: dict[str, int] = {}
    failures = []
    mutators, weights = zip(*MUTATORS)
    for i in range(n):
        folder = root / f"m{i}"
        shutil.copytree(bases["a"], folder)
        mutate = rng.choices(mutators, weights)[0]
        what = mutate(rng, folder, bases)
        try:
            outcome = exercise(folder)
        except BaseException as e:  # noqa: BLE001 - any other exception is what the fuzz looks for
            failures.append(f"#{i} {what}: {type(e).__name__}: {str(e)[:300]}")
            outcome = "failed"
        outcomes[f"{mutate.__name__}:{outcome}"] = outcomes.get(f"{mutate.__name__}:{outcome}", 0) + 1
        shutil.rmtree(folder, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"outcomes": outcomes, "failures": failures, "baseline_kb": baseline, "peak_kb": peak}


def _limit_address_space() -> None:
    """Caps this process's address space a fixed margin above what it uses now (Linux)."""
    try:
        with open("/proc/self/status") as f:
            vm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))
    except (OSError, StopIteration):
        return
    limit = vm_kb * 1024 + ADDRESS_SPACE_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))


@pytest.mark.slow
def test_fuzzed_index_folders_load_or_fail_in_one_line(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["failures"] == [], "\n".join(report["failures"][:20])
    outcomes = report["outcomes"]
    assert sum(outcomes.values()) == MUTATIONS
    for mutate, _ in MUTATORS:  # every kind of damage was tried and refused at least once
        assert outcomes.get(f"{mutate.__name__}:refused", 0) > 0, outcomes
    assert outcomes.get("mutate_field:ok", 0) > 0, outcomes  # harmless changes still load
    growth_mb = (report["peak_kb"] - report["baseline_kb"]) / 1024
    assert growth_mb < MAX_GROWTH_MB, f"peak memory grew by {growth_mb:.0f} MB over the loop"


if __name__ == "__main__":
    print(json.dumps(run_fuzz(Path(sys.argv[1]))))
