"""Retrieval methods behind one interface: classic baselines and neural encoders.

A method scores queries against a gallery. The default is cosine similarity of
unit embeddings, but the interface separates the two sides
(:meth:`Method.embed_gallery` and :meth:`Method.score_queries`) so that a method
may treat queries differently from catalog images, e.g. embed several regions
of a query photo and keep the best score per gallery item.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from simclr_watches.data.images import load_image
from simclr_watches.core.errors import SimclrWatchesError

BUILTIN_METHODS = ("hist", "phash", "thumb", "imagenet", "random")


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalises each row; an all-zero row stays zero (it then matches nothing)."""
    x = np.asarray(x, np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class Method(ABC):
    """A retrieval method: ``name`` plus embeddings (N, D) float32, unit L2 norm.

    Embeddings are cached per file path, so a protocol in which the gallery
    also provides the queries embeds every image once.
    """

    name: str = ""

    def __init__(self) -> None:
        self._cache: dict[Path, np.ndarray] = {}

    @abstractmethod
    def _embed_uncached(self, paths: Sequence[Path]) -> np.ndarray:
        """(N, D) float32 unit vectors for ``paths``, in order, none of them cached yet."""

    def embed(self, paths: Sequence[Path]) -> np.ndarray:
        """(N, D) float32 unit vectors for ``paths``, in order.

        Raises:
            ImageReadError: a file is not a usable image.
        """
        paths = [Path(p) for p in paths]
        todo = list(dict.fromkeys(p for p in paths if p not in self._cache))
        if todo:
            self._cache.update(zip(todo, self._embed_uncached(todo)))
        if not paths:
            return np.zeros((0, 0), np.float32)
        return np.stack([self._cache[p] for p in paths])

    def embed_gallery(self, paths: Sequence[Path]) -> np.ndarray:
        """The gallery's representation, passed back to :meth:`score_queries`: here (G, D) embeddings."""
        return self.embed(paths)

    def score_queries(self, paths: Sequence[Path], gallery: np.ndarray) -> np.ndarray:
        """(Q, G) similarities of query files to the gallery, higher is more similar.

        Args:
            paths: the query image files.
            gallery: what :meth:`embed_gallery` returned.
        """
        return self.embed(paths) @ gallery.T


def _load_rgb(path: Path) -> Image.Image:
    return load_image(path).rgb


class HsvHistogram(Method):
    """Joint HSV colour histogram, 16 x 4 x 4 bins (Swain & Ballard, "Color Indexing", IJCV 1991).

    The embedding is the square root of the normalised histogram, so the
    cosine of two embeddings is their Bhattacharyya coefficient.
    """

    name = "hist"
    bins = (16, 4, 4)

    def _embed_uncached(self, paths: Sequence[Path]) -> np.ndarray:
        out = []
        for p in paths:
            hsv = np.asarray(_load_rgb(p).convert("HSV")).reshape(-1, 3)
            hist, _ = np.histogramdd(hsv, bins=self.bins, range=((0, 256),) * 3)
            out.append(np.sqrt(hist.ravel() / max(hist.sum(), 1)))
        return _unit_rows(np.array(out))


class PerceptualHash(Method):
    """DCT perceptual hash (``imagehash.phash``, 8 x 8 = 64 bits); similarity = 1 - Hamming / bits.

    The embedding is the bit vector as +-1 / sqrt(bits) (cosine = 1 - 2 Hamming / bits,
    the same ranking); :meth:`score_queries` returns the Hamming similarity itself.
    """

    name = "phash"
    hash_size = 8

    def _bits(self, paths: Sequence[Path]) -> np.ndarray:
        import imagehash

        return np.array([imagehash.phash(_load_rgb(p), hash_size=self.hash_size).hash.ravel() for p in paths], bool)

    def _embed_uncached(self, paths: Sequence[Path]) -> np.ndarray:
        bits = self._bits(paths)
        return (np.where(bits, 1.0, -1.0) / np.sqrt(bits.shape[1])).astype(np.float32)

    def score_queries(self, paths: Sequence[Path], gallery: np.ndarray) -> np.ndarray:
        cos = self.embed(paths) @ gallery.T
        # cos = 1 - 2 h / bits  =>  1 - h / bits = (1 + cos) / 2; rounding removes float noise so equal distances tie.
        return np.round((1.0 + cos) / 2.0, 6)


class Thumbnail(Method):
    """The image padded to a white square and shrunk to 32 x 32 RGB; cosine of the mean-centred pixels.

    Centring each vector makes the cosine a correlation, insensitive to overall brightness.
    """

    name = "thumb"
    size = 32

    def _embed_uncached(self, paths: Sequence[Path]) -> np.ndarray:
        out = []
        for p in paths:
            img = ImageOps.pad(_load_rgb(p), (self.size, self.size), Image.Resampling.BOX, color=(255, 255, 255))
            v = np.asarray(img, np.float32).ravel()
            out.append(v - v.mean())
        return _unit_rows(np.array(out))


class EncoderMethod(Method):
    """A CNN encoder's pooled features (see :class:`simclr_watches.model.encoder.Encoder`).

    Args:
        name: how results are labelled.
        spec: ``"random"`` for a seeded random initialisation of EfficientNet-Lite0, or
            a checkpoint path / registered name for :func:`simclr_watches.weights.load_model`.
        seed: initialisation seed for ``"random"``.
        batch_size, device: passed to :func:`simclr_watches.retrieval.embed.embed_paths`.
    """

    def __init__(self, name: str, spec: str, seed: int = 0, batch_size: int = 32, device: str = "cpu",
                 crop: bool = False):
        super().__init__()
        self.name, self.spec, self.seed = name, spec, seed
        self.batch_size, self.device, self.crop = batch_size, device, crop
        self._model = None

    def _load(self):
        if self._model is None:
            if self.spec == "random":
                import torch

                from simclr_watches.model import default_preprocessing
                from simclr_watches.weights import init_encoder

                # fork_rng: seed the initialisation without changing the caller's global RNG.
                with torch.random.fork_rng():
                    torch.manual_seed(self.seed)
                    enc = init_encoder("efficientnet_lite0", "random")
                self._model = (enc.eval(), default_preprocessing("efficientnet_lite0"))
            else:
                from simclr_watches.weights import load_model

                enc, info = load_model(self.spec)
                self._model = (enc, info.preprocessing)
        return self._model

    def _embed_uncached(self, paths: Sequence[Path]) -> np.ndarray:
        from simclr_watches.retrieval.embed import embed_paths

        enc, pre = self._load()
        from simclr_watches.data.mask import crop_to_foreground

        result = embed_paths(enc, pre, list(paths), batch_size=self.batch_size, device=self.device,
                             progress=False, label=self.name, view=crop_to_foreground if self.crop else None)
        if result.skipped:
            raise result.skipped[0]
        return result.vectors


class LocalizedMethod(Method):
    """An encoder whose queries are searched window by window (see :mod:`simclr_watches.retrieval.localize`).

    The gallery is embedded whole, as by the wrapped encoder; each query's windows are
    scored against it and fused with :func:`simclr_watches.retrieval.localize.fuse_scores`.
    """

    def __init__(self, inner: EncoderMethod, cfg=None):
        super().__init__()
        from simclr_watches.retrieval.localize import LocalizeConfig

        self.inner, self.cfg = inner, cfg or LocalizeConfig()
        self.name = f"{inner.name}+loc"

    def _embed_uncached(self, paths: Sequence[Path]) -> np.ndarray:
        return self.inner.embed(paths)

    def score_queries(self, paths: Sequence[Path], gallery: np.ndarray) -> np.ndarray:
        from simclr_watches.core.device import resolve_device
        from simclr_watches.retrieval.localize import embed_regions, fuse_scores, window_crops
        from simclr_watches.data.mask import crop_box

        enc, pre = self.inner._load()
        device = resolve_device(self.inner.device)
        enc = enc.to(device)
        rows = []
        for p in paths:
            photo = load_image(p)
            _, whole, crops = window_crops(photo.rgb, pre, self.cfg, crop_box(photo) if self.inner.crop else None)
            regions = embed_regions(enc, pre, whole, crops, device, self.inner.batch_size)
            rows.append(fuse_scores(regions @ gallery.T, self.cfg.top_m)[0])
        return np.stack(rows) if rows else np.zeros((0, len(gallery)), np.float32)


def _is_checkpoint(spec: str) -> bool:
    from simclr_watches.weights import ENSEMBLE_SEP, load_registry

    registry = load_registry()
    return any(all(Path(p).is_file() or p in registry for p in parts) for parts in ([spec], spec.split(ENSEMBLE_SEP)))


def make_method(name: str, *, seed: int = 0, batch_size: int = 32, device: str = "cpu") -> Method:
    """Builds a method from its name; an encoder's weights load on first use.

    Args:
        name: one of ``BUILTIN_METHODS``, a checkpoint file, a registered weights name or an
            ensemble of those (``A+B``, see :func:`simclr_watches.weights.load_model`);
            an encoder name + ``"+crop"`` crops photos around the watch before embedding,
            + ``"+loc"`` searches its queries window by window (both: ``imagenet+crop+loc``).
        seed: seed of the ``random`` encoder.

    Raises:
        SimclrWatchesError: the name is neither a method, a file nor a registered name.
    """
    from simclr_watches.weights import IMAGENET_LITE0

    if name.endswith("+crop"):
        inner = make_method(name[: -len("+crop")], seed=seed, batch_size=batch_size, device=device)
        if not isinstance(inner, EncoderMethod):
            raise SimclrWatchesError(f"{name}: cropping (+crop) needs an encoder method, not {inner.name!r}")
        inner.name, inner.crop = name, True
        return inner
    if name.endswith("+loc"):
        inner = make_method(name[: -len("+loc")], seed=seed, batch_size=batch_size, device=device)
        if not isinstance(inner, EncoderMethod):
            raise SimclrWatchesError(f"{name}: localisation (+loc) needs an encoder method, not {inner.name!r}")
        return LocalizedMethod(inner)
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
