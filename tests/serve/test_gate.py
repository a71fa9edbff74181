import threading

import pytest

from simclr_watches.serve.errors import ApiError
from simclr_watches.serve.gate import Gate


def test_the_gate_admits_its_limit_and_refuses_the_next_at_once():
    refusals = []
    gate = Gate(2, on_refuse=lambda: refusals.append(1))
    with gate.admit(), gate.admit():
        assert gate.held == 2
        with pytest.raises(ApiError, match="busy: 2 requests are being served") as info:
            with gate.admit():
                pass
        assert info.value.status == 503 and refusals == [1]
    assert gate.held == 0
    with pytest.raises(RuntimeError):
        with gate.admit():
            raise RuntimeError("a failing request")
    assert gate.held == 0  # released on failure too


def test_the_gate_never_admits_more_than_its_limit_across_threads():
    gate, inside, peak, lock = Gate(3), [0], [0], threading.Lock()
    release = threading.Event()

    def worker():
        try:
            with gate.admit():
                with lock:
                    inside[0] += 1
                    peak[0] = max(peak[0], inside[0])
                release.wait(5)
                with lock:
                    inside[0] -= 1
        except ApiError:
            pass

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    release.set()
    for t in threads:
        t.join()
    assert 1 <= peak[0] <= 3 and gate.held == 0
