"""Method names with the learnt box: ``ENCODER+box[-only][-flip][-two]``."""

from __future__ import annotations

import re

import pytest

from simclr_watches.core.errors import SimclrWatchesError
from simclr_watches.evaluation.encoders import BoxMethod, LocalizedMethod
from simclr_watches.evaluation.method_names import make_method
from simclr_watches.retrieval.boxes import BoxSearchConfig


@pytest.mark.parametrize("suffix,cfg", [
    ("+box", BoxSearchConfig()),
    ("+box-only", BoxSearchConfig(whole=False)),
    ("+box-flip-two", BoxSearchConfig(flip=True, boxes=2)),
    ("+box-two-only-flip", BoxSearchConfig(flip=True, boxes=2, whole=False)),
    ("+box-grown", BoxSearchConfig(squares=(), top_m=1)),
])
def test_box_suffixes_configure_the_box_search(suffix, cfg):
    m = make_method(f"imagenet+crop{suffix}")
    assert isinstance(m, BoxMethod) and m.cfg == cfg
    assert m.name == f"imagenet+crop{suffix}" and m.inner.crop and m.inner.name == "imagenet+crop"


def test_loc_is_still_the_windows():
    m = make_method("imagenet+crop+loc")
    assert isinstance(m, LocalizedMethod) and not isinstance(m, BoxMethod)


@pytest.mark.parametrize("name,fragment", [
    ("imagenet+box-wide", "+box options are"),
    ("imagenet+box-flip-flip", "+box options are"),
    ("hist+box", "needs an encoder method"),
])
def test_bad_box_names_are_refused(name, fragment):
    with pytest.raises(SimclrWatchesError, match=re.escape(fragment)):
        make_method(name)
