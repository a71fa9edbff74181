"""kill -9 of ``add`` and ``compact`` at every step boundary (issue 14 point 4), and the CLI of updates.

The writer runs as a real ``simclr-watches`` process with ``SIMCLR_WATCHES_CRASH_AT=k``
(:func:`simclr_watches.retrieval.store.crash_point`): it SIGKILLs itself at its k-th
boundary (before and after each data file's rename, after the manifest swap, after each
deletion), for k = 1, 2, ... until a run finishes. After each kill the index must open and
answer every probe exactly as before the command or exactly as after it (full result
lists), with every item of one of the two states, and a following command must work and
leave no leftover file.
"""

import json
import os
import shutil
import signal

import numpy as np
import pytest

from helpers import assert_user_error, draw_watch, run_cli
from simclr_watches.retrieval import store
from simclr_watches.retrieval.index import build_index, load_index

MAX_POINTS = 40  # far more boundaries than a command has: a run that never finishes fails the test


def _answers(index_dir, probes):
    """Every probe's full result list as (id, score to 4 places), and the live ids: what a reader sees.

    Near ties are listed by id: an added row's exact cosine and the forest's (after a
    compaction) agree to float32 precision, not in the order of items a few 1e-7 apart.
    """
    index = load_index(index_dir)
    results = []
    for p in probes:
        rows, scores = index.query(p, len(index))
        results.append(sorted(((index.items.id(r), round(s, 4)) for r, s in zip(rows, scores)),
                              key=lambda hit: (-hit[1], hit[0])))
    live = sorted(index.items.id(r) for r in range(len(index)) if not index.is_hidden(r))
    return results, live


def _clean(index_dir):
    meta = json.loads((index_dir / "index.json").read_text())
    return sorted(os.listdir(index_dir)) == sorted(["index.json", ".lock", *meta["files"].values()])


@pytest.fixture
def crash_setup(make_catalog, small_checkpoint, tmp_path):
    catalog = make_catalog(6)
    base = tmp_path / "base"
    build_index(catalog, base, checkpoint=str(small_checkpoint), progress=False, n_trees=3)
    new = tmp_path / "new"
    new.mkdir()
    for i in range(6, 9):
        draw_watch(i).save(new / f"w{i:03d}.png")
    rng = np.random.default_rng(14)
    probes = rng.normal(size=(8, 512)).astype(np.float32)
    return catalog, base, new, np.concatenate([probes / np.linalg.norm(probes, axis=1, keepdims=True),
                                               load_index(base).vectors[:3]])


def _crash_runs(state_dir, args, probes, tmp_path, env_extra=None):
    """Runs ``args`` (with INDEX for the index copy) killed at each boundary; checks each outcome; returns the count.

    A compaction must answer as before: there, "before or after" is one answer, and the
    files' own checks on opening (forest against its rows) do the rest.
    """
    before = _answers(state_dir, probes)
    ref = tmp_path / "ref"
    shutil.copytree(state_dir, ref)
    res = run_cli(*[ref if a == "INDEX" else a for a in args], env=env_extra)
    assert res.returncode == 0, res.stderr[-2000:]
    after = _answers(ref, probes)
    assert (after == before) == (args[0] == "compact")
    for k in range(1, MAX_POINTS):
        work = tmp_path / f"k{k}"
        shutil.copytree(state_dir, work)
        res = run_cli(*[work if a == "INDEX" else a for a in args], env={**(env_extra or {}), store.CRASH_ENV: str(k)})
        outcome = _answers(work, probes)
        assert outcome in (before, after), f"kill at point {k}: a mix of the two states"
        if res.returncode == 0:  # fewer boundaries than k: the command ran to its end
            assert outcome == after and _clean(work)
            return k - 1
        assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
        # The next writer works on what the kill left, and removes its leftovers.
        res = run_cli("compact", work)
        assert res.returncode == 0, res.stderr[-2000:]
        assert _answers(work, probes)[1] == outcome[1] and _clean(work)
        shutil.rmtree(work)
    raise AssertionError(f"the command never finished in {MAX_POINTS} runs")


@pytest.mark.slow
def test_kill_9_of_add_at_every_boundary_leaves_the_index_as_before_or_after(crash_setup, tmp_path):
    catalog, base, new, probes = crash_setup
    assert run_cli("add", base, new / "w006.png").returncode == 0  # an added-rows file, which the next add replaces
    assert run_cli("remove", base, "1").returncode == 0
    points = _crash_runs(base, ["add", "INDEX", new], probes, tmp_path)
    assert points == 4  # the new added rows (before and after their rename), the manifest, the old file's deletion


@pytest.mark.slow
def test_kill_9_of_compact_at_every_boundary_leaves_the_index_as_before_or_after(crash_setup, tmp_path):
    catalog, base, new, probes = crash_setup
    assert run_cli("add", base, new).returncode == 0
    assert run_cli("remove", base, "1", str(new / "w007.png")).returncode == 0
    points = _crash_runs(base, ["compact", "INDEX"], probes, tmp_path)
    assert points == 23  # forest, rows and 5 columns (2 boundaries each), the manifest, eight deletions


@pytest.mark.slow
def test_cli_add_remove_compact_update_and_info(crash_setup, tmp_path):
    catalog, idx, new, _ = crash_setup
    res = run_cli("add", idx, new, catalog / "w000.png")
    assert res.returncode == 0, res.stderr
    added = [json.loads(line)["added"] for line in res.stdout.splitlines()]
    assert [a["id"] for a in added] == [6, 7, 8] and "unchanged" in res.stderr and "added 3 (embedded 3)" in res.stderr
    res = run_cli("search", new / "w008.png", "--index", idx, "--json", "-k", 1)
    assert json.loads(res.stdout)["results"][0]["id"] == 8

    res = run_cli("remove", idx, "8", str(catalog / "w001.png"), "77")
    assert res.returncode == 1 and "skipped 77: no item with id 77" in res.stderr
    assert sorted(json.loads(line)["removed"]["id"] for line in res.stdout.splitlines()) == [1, 8]
    info = json.loads(run_cli("info", idx).stdout)
    assert (info["live"], info["added"], info["removed"], info["count"]) == (7, 3, 2, 9)

    res = run_cli("compact", idx)
    assert res.returncode == 0 and "compacted" in res.stderr
    info = json.loads(run_cli("info", idx).stdout)
    assert (info["live"], info["added"], info["removed"], info["count"]) == (7, 0, 0, 7)

    draw_watch(30).save(catalog / "w002.png")
    res = run_cli("build-index", catalog, "--out", idx, "--update")
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [d["added"]["path"] for d in lines if "added" in d] == [str(catalog / "w001.png"), str(catalog / "w002.png")]
    # The catalog's changed file is removed; the items added from outside the catalog (6, 7) stay.
    assert [d["removed"]["id"] for d in lines if "removed" in d] == [2]
    info = json.loads(run_cli("info", idx).stdout)
    assert info["live"] == 8  # 7 after compaction, + w001 put back, + new w002, - old w002

    assert_user_error(run_cli("add", catalog, new), "not an index")
    assert_user_error(run_cli("build-index", catalog, "--out", idx, "--update", "--force"), "give one of them")
    assert not (catalog / ".lock").exists()
