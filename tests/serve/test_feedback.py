"""Feedback bodies are validated field by field; lines are appended whole and bounded."""

import json
import threading

import pytest

from simclr_watches.serve.errors import ApiError
from simclr_watches.serve.feedback import FeedbackLog, parse_feedback

GOOD = {"query": "upload:sha256:" + "ab" * 32, "item_id": 3, "verdict": "right", "rank": 1, "score": 0.93}


def test_a_valid_body_is_kept_as_given():
    assert parse_feedback(json.dumps(GOOD).encode()) == GOOD
    assert parse_feedback(b'{"query": "item:7", "item_id": 0, "verdict": "wrong"}') == \
        {"query": "item:7", "item_id": 0, "verdict": "wrong"}


@pytest.mark.parametrize("change, status, fragment", [
    ({"verdict": "maybe"}, 422, "verdict: expected 'right' or 'wrong'"),
    ({"item_id": -1}, 422, "item_id: expected an integer in [0,"),
    ({"item_id": True}, 422, "item_id: expected an integer"),
    ({"query": "../../etc/passwd"}, 422, "query: expected upload:sha256:HEX or item:ID"),
    ({"query": "item:1\nforged"}, 422, "query: expected a non-empty printable string"),
    ({"rank": 0}, 422, "rank: expected an integer in [1, 10000]"),
    ({"score": float("nan")}, 422, "score: expected a number"),
    ({"extra": 1}, 422, "extra: unknown field"),
    ({"verdict": None}, 422, "verdict"),
])
def test_each_bad_field_is_named(change, status, fragment):
    with pytest.raises(ApiError) as info:
        parse_feedback(json.dumps({**GOOD, **change}).encode())
    assert info.value.status == status and fragment in info.value.message


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\xff\xfe", b"[" * 100000])
def test_a_body_that_is_no_json_object_is_400(body):
    with pytest.raises(ApiError, match="feedback must be a JSON object") as info:
        parse_feedback(body)
    assert info.value.status == 400
    missing = {k: v for k, v in GOOD.items() if k != "query"}
    with pytest.raises(ApiError, match="query: missing"):
        parse_feedback(json.dumps(missing).encode())


def test_lines_from_many_threads_are_whole_and_the_file_stops_at_its_limit(tmp_path):
    log = FeedbackLog(tmp_path / "feedback.jsonl", max_bytes=100_000)
    threads = [threading.Thread(target=lambda i=i: [log.append({**GOOD, "item_id": i}) for _ in range(20)])
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (tmp_path / "feedback.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 160 and sorted({r["item_id"] for r in records}) == list(range(8))
    assert list(records[0]) == ["time", *GOOD] and records[0]["time"].endswith("+00:00")
    size = (tmp_path / "feedback.jsonl").stat().st_size
    small = FeedbackLog(tmp_path / "feedback.jsonl", max_bytes=size + 10)
    with pytest.raises(ApiError, match="feedback.jsonl has reached its limit") as info:
        small.append(GOOD)
    assert info.value.status == 507 and (tmp_path / "feedback.jsonl").stat().st_size == size
