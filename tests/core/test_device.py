import pytest

from simclr_watches.core.device import resolve_device
from simclr_watches.core.errors import SimclrWatchesError


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(SimclrWatchesError, match="unknown device"):
        resolve_device("tpu9")
