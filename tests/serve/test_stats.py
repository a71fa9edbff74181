from simclr_watches.serve.stats import Stats


def test_latency_percentiles_cover_the_last_window():
    stats = Stats(window=100)
    assert stats.snapshot()["p50_ms"] is None and stats.snapshot()["searches"] == 0
    for ms in range(1, 201):  # the window keeps 101..200
        stats.searched(float(ms))
    stats.refused()
    snap = stats.snapshot()
    assert snap["searches"] == 200 and snap["busy_refused"] == 1
    assert snap["p50_ms"] == 150.5 and 199 <= snap["p99_ms"] <= 200 and snap["uptime_s"] >= 0
