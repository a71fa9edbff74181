import pytest

from simclr_watches.core.errors import SimclrWatchesError
from simclr_watches.serve.settings import MIN_TOKEN_CHARS, ServeSettings, new_token


def test_defaults_are_read_only_and_limits_must_be_positive():
    s = ServeSettings()
    assert not s.enable_writes and s.token is None and s.max_concurrent >= 1
    with pytest.raises(AttributeError):
        s.max_pixels = 1  # frozen
    for field in ("max_upload_bytes", "max_pixels", "max_concurrent", "max_top_k"):
        with pytest.raises(SimclrWatchesError, match=f"{field.replace('_', '-')} must be a positive integer"):
            ServeSettings(**{field: 0})


def test_writes_need_a_long_enough_token():
    with pytest.raises(SimclrWatchesError, match="writes need a token"):
        ServeSettings(enable_writes=True)
    with pytest.raises(SimclrWatchesError, match=f"at least {MIN_TOKEN_CHARS} characters"):
        ServeSettings(enable_writes=True, token="short")
    token = new_token()
    assert len(token) >= MIN_TOKEN_CHARS and token != new_token()
    assert ServeSettings(enable_writes=True, token=token).token == token


def test_the_upload_timeout_must_be_a_positive_number_of_seconds():
    assert ServeSettings().upload_timeout_s == 30.0 and ServeSettings(upload_timeout_s=0.5).upload_timeout_s == 0.5
    for bad in (0, -1.0, float("inf"), float("nan"), True, "30"):
        with pytest.raises(SimclrWatchesError, match="upload-timeout must be a positive number of seconds"):
            ServeSettings(upload_timeout_s=bad)
