"""Feedback on results ("right", "wrong"), validated and kept as JSON lines in the index folder.

Each line of ``INDEX/feedback.jsonl`` is one judgement, for learning from feedback later::

    {"time": "2025-01-01T12:00:00+00:00", "query": "upload:sha256:…", "item_id": 3,
     "path": "/catalog/w003.png", "sha256": "…", "verdict": "right", "rank": 1, "score": 0.93}

``query`` says what was searched (``upload:sha256:HEX`` for a photo, ``item:ID`` for
"more like this"); ``path`` and ``sha256`` are the server's record of the item judged.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from simclr_watches.core import validate
from simclr_watches.core.clock import utc_now
from simclr_watches.core.files import open_in_folder
from simclr_watches.serve.errors import ApiError

VERDICTS = ("right", "wrong")
QUERY_PATTERN = re.compile(r"^(upload:sha256:[0-9a-f]{64}|item:\d{1,19})$")
MAX_RANK = 10_000
FIELDS = {"query", "item_id", "verdict", "rank", "score"}


def parse_feedback(body: bytes) -> dict[str, Any]:
    """A feedback request body, validated: ``query``, ``item_id``, ``verdict``; optional ``rank`` and ``score``.

    Raises:
        ApiError: 400 not a JSON object, 422 a field missing, unknown, or of the wrong type or range.
    """
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, "feedback must be a JSON object") from None
    if not isinstance(data, dict):
        raise ApiError(400, "feedback must be a JSON object")
    unknown = sorted(set(data) - FIELDS)
    try:
        if unknown:
            raise validate.FieldError(unknown[0][:40], f"unknown field; known: {', '.join(sorted(FIELDS))}")
        query = validate.text(validate.member(data, "query"), "query", 100, printable=True)
        if not QUERY_PATTERN.match(query):
            raise validate.FieldError("query", f"expected upload:sha256:HEX or item:ID, got {validate.describe(query)}")
        out = {"query": query,
               "item_id": validate.int_in(validate.member(data, "item_id"), "item_id", 0, 2**63 - 1),
               "verdict": validate.one_of(validate.member(data, "verdict"), "verdict", list(VERDICTS))}
        if "rank" in data:
            out["rank"] = validate.int_in(data["rank"], "rank", 1, MAX_RANK)
        if "score" in data:
            out["score"] = validate.real_in(data["score"], "score", -1.0001, 1.0001)
    except validate.FieldError as e:
        raise ApiError(422, f"feedback: {e}") from None
    return out


class FeedbackLog:
    """Appends feedback lines to one file, each with a single write, never past ``max_bytes``.

    The file is never reached through a symbolic link (a planted ``feedback.jsonl -> ~/.bashrc``
    is refused: 500). A line is written whole by one ``write`` of a file opened for appending, under a lock:
    lines from concurrent requests never interleave, and a crash loses at most the line
    being written (a reader skips a last line without its newline).
    """

    def __init__(self, path: Path, max_bytes: int):
        self.path, self.max_bytes = Path(path), max_bytes
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Writes ``record`` with the current UTC ``time`` first; returns the line written, parsed.

        Raises:
            ApiError: 507 the file has reached ``max_bytes``; 500 it is a symbolic link or not a regular file.
        """
        line = {"time": utc_now(), **record}
        data = (json.dumps(line, ensure_ascii=True) + "\n").encode()
        with self._lock:
            fd = open_in_folder(self.path.parent, self.path.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                                lambda path, why: ApiError(500, f"feedback not recorded: {path.name}: {why}"))
            try:
                if os.fstat(fd).st_size + len(data) > self.max_bytes:
                    raise ApiError(507, f"{self.path.name} has reached its limit of {self.max_bytes} bytes")
                os.write(fd, data)
            finally:
                os.close(fd)
        return line
