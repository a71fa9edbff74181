import torch
from PIL import Image

from simclr_watches.model import Preprocessing, default_preprocessing


def test_preprocessing_pads_to_square_on_white():
    pre = Preprocessing(size=32)
    img = Image.new("RGB", (100, 50), (0, 0, 0))
    x = pre.to_uint8(img)
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8
    assert (x[:, 0, :] == 255).all() and (x[:, 16, :] == 0).all()  # top band is padding, middle is image
    norm = pre(img)
    assert norm.shape == (3, 32, 32)
    assert torch.allclose(norm[:, 16, 16], (0 - torch.tensor(pre.mean)) / torch.tensor(pre.std))


def test_preprocessing_round_trips_through_dict():
    pre = default_preprocessing("resnet18", size=128)
    assert Preprocessing.from_dict(pre.to_dict()) == pre
