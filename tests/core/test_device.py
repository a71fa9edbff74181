import pytest

from simclr_watches.core.device import resolve_device
from simclr_watches.core.errors import SimclrWatchesError


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(SimclrWatchesError, match="unknown device"):
        resolve_device("tpu9")


def test_torch_threads_sets_the_calling_threads_count_and_restores_it():
    import torch

    from simclr_watches.core.device import torch_threads

    before = torch.get_num_threads()
    seen = []
    with torch_threads(1):
        seen.append(torch.get_num_threads())
        with torch_threads(None):
            seen.append(torch.get_num_threads())
    assert seen == [1, 1] and torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            raise RuntimeError("restored anyway")
    assert torch.get_num_threads() == before
