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
    ("+box-three", BoxSearchConfig(squares=(1.0, 1.3, 1.7))),  # the default before the model's 224 px regions
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


def test_gem_suffix_sets_the_pooling_of_the_encoder_before_crop_and_box():
    m = make_method("imagenet+gem3+crop+box")
    assert isinstance(m, BoxMethod) and m.inner.crop and m.inner.gem_p == 3.0
    assert m.inner.name == "imagenet+gem3+crop"
    assert make_method("imagenet+gem2.5").gem_p == 2.5 and make_method("imagenet").gem_p == 1.0


@pytest.mark.parametrize("name,fragment", [
    ("imagenet+crop+gem3", "before +crop"),
    ("hist+gem3", "needs an encoder name"),
    ("imagenet+gem0", "must lie in [1, 16]"),
])
def test_bad_gem_names_are_refused(name, fragment):
    with pytest.raises(SimclrWatchesError, match=re.escape(fragment)):
        make_method(name)
