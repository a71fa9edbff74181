"""Methods by name, as ``evaluate --methods`` lists them: ``hist,phash,imagenet,watches-lite0-v1+crop+loc``."""

from __future__ import annotations

import re
from pathlib import Path

from simclr_watches.core.errors import SimclrWatchesError
from simclr_watches.evaluation.baselines import HsvHistogram, PerceptualHash, Thumbnail
from simclr_watches.evaluation.encoders import BoxMethod, EncoderMethod, LocalizedMethod
from simclr_watches.evaluation.method import Method

BUILTIN_METHODS = ("hist", "phash", "thumb", "imagenet", "random")
# Options of the +box suffix (``+box-flip-two``): what each changes in BoxSearchConfig.
BOX_OPTIONS = {"only": {"whole": False}, "flip": {"flip": True}, "two": {"boxes": 2},
               "grown": {"squares": (), "top_m": 1}, "three": {"squares": (1.0, 1.3, 1.7)}}


def _box_suffix(name: str) -> tuple[str, dict] | None:
    """``(inner name, BoxSearchConfig fields)`` of a name ending in ``+box[-option...]``, else None.

    Raises:
        SimclrWatchesError: an unknown or repeated option.
    """
    inner, sep, tail = name.rpartition("+box")
    if not sep or (tail and not tail.startswith("-")):
        return None
    opts = [o for o in tail.split("-") if o]
    unknown = [o for o in opts if o not in BOX_OPTIONS]
    if unknown or len(set(opts)) != len(opts):
        raise SimclrWatchesError(f"{name}: +box options are {', '.join(BOX_OPTIONS)}, each at most once "
                                 f"(e.g. +box-flip-two), got {tail!r}")
    return inner, {k: v for o in opts for k, v in BOX_OPTIONS[o].items()}


# "+pca256" / "+cpca256" / "+white256" / "+f16": score as an index stores its vectors (PCA to 256-d: of the
# second moment, centred or whitened; float16).
_STORED = re.compile(r"\+(?:(?P<kind>pca|cpca|white)(?P<width>[0-9]{1,5})|f16)$")


def _is_checkpoint(spec: str) -> bool:
    from simclr_watches.weights import ENSEMBLE_SEP, load_registry

    registry = load_registry()
    return any(all(Path(p).is_file() or p in registry for p in parts) for parts in ([spec], spec.split(ENSEMBLE_SEP)))


def make_method(name: str, *, seed: int = 0, batch_size: int = 32, device: str = "cpu") -> Method:
    """Builds a method from its name; an encoder's weights load on first use.

    Args:
        name: one of ``BUILTIN_METHODS``, a checkpoint file, a registered weights name or an
            ensemble of those (``A+B``, see :func:`simclr_watches.weights.loading.load_model`);
            an encoder name + ``"+crop"`` crops photos around the watch before embedding,
            + ``"+loc"`` searches its queries window by window (both: ``imagenet+crop+loc``),
            + ``"+box"`` by the learnt box as ``search --locate box`` does (``-only``: without the
            whole view, ``-flip``: with mirror images, ``-two``: around a second box too, ``-grown``:
            the box grown by 10 % instead of the squares around it, ``-three``: three squares (1, 1.3, 1.7 x
            the box) instead of two; e.g. ``watches-lite0-v1-ens+crop+box-flip``);
            + ``"+pcaW"``, ``"+cpcaW"``, ``"+whiteW"`` or ``"+f16"`` (before ``+loc`` or ``+box``) scores its
            gallery as an index stores it: projected to W dimensions by a PCA (centred,
            whitened) fitted on the gallery (a gallery of W items or fewer: not projected, as
            ``build-index`` keeps it), rounded to float16 (``+f16``: rounded only);
            an encoder name + ``"+gemP"`` pools its final map by the generalised mean of exponent P
            (:func:`simclr_watches.model.pooling.gem`) instead of the average, before any other
            suffix: ``watches-lite0-v1-ens+gem3+crop+box``.
        seed: seed of the ``random`` encoder.

    Raises:
        SimclrWatchesError: the name is neither a method, a file nor a registered name.
    """
    from simclr_watches.weights import IMAGENET_LITE0

    gem = re.fullmatch(r"(.+)\+gem(\d+(?:\.\d+)?)", name)
    if gem:
        inner = make_method(gem[1], seed=seed, batch_size=batch_size, device=device)
        p = float(gem[2])
        if not isinstance(inner, EncoderMethod) or inner.crop:
            raise SimclrWatchesError(f"{name}: GeM pooling (+gemP) needs an encoder name before +crop, +loc or +box, "
                                     f"e.g. watches-lite0-v1-ens+gem3+crop+box")
        if not 1.0 <= p <= 16.0:
            raise SimclrWatchesError(f"{name}: the GeM exponent must lie in [1, 16], got {gem[2]}")
        inner.name, inner.gem_p = name, p
        return inner
    if name.endswith("+crop"):
        inner = make_method(name[: -len("+crop")], seed=seed, batch_size=batch_size, device=device)
        if not isinstance(inner, EncoderMethod):
            raise SimclrWatchesError(f"{name}: cropping (+crop) needs an encoder method, not {inner.name!r}")
        inner.name, inner.crop = name, True
        return inner
    stored = _STORED.search(name)
    if stored:
        inner = make_method(name[: stored.start()], seed=seed, batch_size=batch_size, device=device)
        if not isinstance(inner, EncoderMethod):
            raise SimclrWatchesError(f"{name}: {stored[0]} needs an encoder method (before +loc), not {inner.name!r}")
        inner.name = name
        inner.store_as_index(int(stored["width"] or 0), stored["kind"] or "")
        return inner
    if name.endswith("+loc"):
        inner = make_method(name[: -len("+loc")], seed=seed, batch_size=batch_size, device=device)
        if not isinstance(inner, EncoderMethod):
            raise SimclrWatchesError(f"{name}: localisation (+loc) needs an encoder method, not {inner.name!r}")
        return LocalizedMethod(inner)
    box = _box_suffix(name)
    if box is not None:
        from simclr_watches.retrieval.boxes import BoxSearchConfig

        inner = make_method(box[0], seed=seed, batch_size=batch_size, device=device)
        if not isinstance(inner, EncoderMethod):
            raise SimclrWatchesError(f"{name}: the learnt box (+box) needs an encoder method, not {inner.name!r}")
        return BoxMethod(inner, BoxSearchConfig(**box[1]), suffix=name[len(box[0]):])
    simple = {"hist": HsvHistogram, "phash": PerceptualHash, "thumb": Thumbnail}
    if name in simple:
        return simple[name]()
    if name == "imagenet":
        return EncoderMethod(name, IMAGENET_LITE0, batch_size=batch_size, device=device)
    if name == "random":
        return EncoderMethod(name, "random", seed=seed, batch_size=batch_size, device=device)
    if _is_checkpoint(name):
        return EncoderMethod(name, name, batch_size=batch_size, device=device)
    raise SimclrWatchesError(
        f"unknown method {name!r}: not one of {', '.join(BUILTIN_METHODS)}, "
        "an existing checkpoint file, or a registered weights name"
    )


def parse_methods(text: str, **kwargs) -> list[Method]:
    """Builds the methods of a comma-separated list, e.g. ``"hist,phash,imagenet"``.

    Raises:
        SimclrWatchesError: the list is empty, repeats a method, or names an unknown one.
    """
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise SimclrWatchesError("no methods given; e.g. --methods hist,phash,imagenet")
    if len(set(names)) != len(names):
        raise SimclrWatchesError(f"method list {text!r} names a method twice")
    return [make_method(n, **kwargs) for n in names]
