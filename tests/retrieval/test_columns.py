"""Item records as columns (format 3): round trips, selection, and the checks a crafted file meets."""

import numpy as np

from simclr_watches.retrieval.columns import Columns, Items

RECORDS = [{"id": 2, "path": "/c/a.jpg", "sha256": "ab" * 32, "bytes": 10},
           {"id": 5, "path": "/c/été.png", "sha256": "01" * 32, "bytes": 0},
           {"id": 9, "path": "/c/\udcff-raw.jpg", "sha256": "ff" * 32, "bytes": 7}]  # a name that is no UTF-8


def test_records_round_trip_and_select():
    cols = Columns.from_records(RECORDS)
    assert [cols.record(i) for i in range(3)] == RECORDS and cols.problem() is None
    assert cols.all_paths() == [r["path"] for r in RECORDS] and cols.all_sha256() == [r["sha256"] for r in RECORDS]
    picked = cols.select(np.array([2, 0]))
    assert [picked.record(i) for i in range(2)] == [RECORDS[2], RECORDS[0]]
    both = picked.concat(Columns.from_records(RECORDS[1:2]))
    assert [both.record(i)["id"] for i in range(3)] == [9, 2, 5] and both.offsets[-1] == len(both.paths)


def test_items_read_rows_from_columns_and_added_records():
    added = [{"id": 11, "path": "/c/new.jpg", "sha256": "cd" * 32, "bytes": 3}]
    items = Items(Columns.from_records(RECORDS), added, removed=[5, 11])
    assert len(items) == 4 and items[0] == RECORDS[0] and items[1] == {**RECORDS[1], "removed": True}
    assert items[3] == {**added[0], "removed": True}
    assert [items.row_of(i) for i in (2, 5, 9, 11, 3, 12)] == [0, 1, 2, 3, None, None]
    assert items.ids().tolist() == [2, 5, 9, 11] and items.paths()[3] == "/c/new.jpg"
    assert items.columns(np.array([2, 3])).ids.tolist() == [9, 11]


def test_crafted_columns_are_refused():
    good = Columns.from_records(RECORDS)

    def bad(**change):
        return Columns(**{**good.__dict__, **change}).problem()

    assert "not strictly ascending" in bad(ids=np.array([2, 2, 9]))
    assert "negative id" in bad(ids=np.array([-1, 5, 9]))
    assert "negative size" in bad(sizes=np.array([1, -1, 0]))
    assert "1..16384 bytes" in bad(offsets=np.array([0, 8, 8, len(good.paths)]))
    assert "from offset 0" in bad(offsets=good.offsets + 1)
    assert "hold" in bad(offsets=np.concatenate([good.offsets[:-1], [good.offsets[-1] - 1]]))
    nul = good.paths.copy()
    nul[3] = 0
    assert "NUL" in bad(paths=nul)


def test_rows_are_found_by_sha256_without_reading_every_record():
    added = [{"id": 11, "path": "/c/new.jpg", "sha256": "ab" * 32, "bytes": 3}]
    items = Items(Columns.from_records(RECORDS), added, removed=[])
    near = "ab" * 4 + "00" * 28  # same first 8 bytes as RECORDS[0]: found by prefix, refused exactly
    assert items.rows_with_sha256(["ab" * 32, "ff" * 32, near, "12" * 32]) == {"ab" * 32: [0, 3], "ff" * 32: [2]}
    assert items.rows_with_sha256([]) == {}
