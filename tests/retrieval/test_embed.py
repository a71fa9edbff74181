import numpy as np
from PIL import Image

from simclr_watches.data.images import scan_images
from simclr_watches.retrieval.embed import KEPT_VIEW, embed_paths
from simclr_watches.weights import load_encoder_file


def test_embeds_in_order_skips_bad_files_and_is_batch_independent(make_catalog, small_checkpoint):
    root = make_catalog(5)
    (root / "w002.png").write_bytes(b"broken")
    enc, info = load_encoder_file(small_checkpoint)
    paths = scan_images(root)
    a = embed_paths(enc, info.preprocessing, paths, batch_size=2, progress=False)
    b = embed_paths(enc, info.preprocessing, paths, batch_size=5, progress=False)
    assert [it.path.name for it in a.items] == ["w000.png", "w001.png", "w003.png", "w004.png"]
    assert [e.path.name for e in a.skipped] == ["w002.png"]
    assert a.vectors.shape == (4, 512) and a.vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(a.vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(a.vectors, b.vectors, atol=1e-5)
    # Distinct generated watches get distinct embeddings.
    sims = a.vectors @ a.vectors.T
    assert (sims[~np.eye(4, dtype=bool)] < 0.9999).all()



def test_an_extra_view_is_averaged_in_as_a_side_is(make_catalog, small_checkpoint):
    root = make_catalog(3)
    Image.new("RGB", (1500, 1200), (30, 90, 200)).save(root / "w003.png")  # larger than the views an extra view keeps
    enc, info = load_encoder_file(small_checkpoint)
    pre, paths = info.preprocessing, scan_images(root)
    seen = []
    fixed = np.zeros(enc.dim, np.float32)
    fixed[0] = 1.0

    def extra(views, inputs):  # what it is handed: each photo's view (bounded) and its input at the model's size
        seen.append(([v.size for v in views], tuple(inputs.shape)))
        return np.tile(fixed, (len(views), 1))

    plain = embed_paths(enc, pre, paths, batch_size=2, progress=False, sides=(64, 96))
    both = embed_paths(enc, pre, paths, batch_size=2, progress=False, sides=(64, 96), extra=extra)
    at64 = embed_paths(enc, pre, paths, batch_size=2, progress=False)
    at96 = embed_paths(enc, pre, paths, batch_size=2, progress=False, sides=(96,))
    expected = at64.vectors + at96.vectors + fixed
    assert np.allclose(both.vectors, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)
    assert not np.allclose(both.vectors, plain.vectors, atol=1e-3)
    assert [shape for _, shape in seen] == [(2, 3, 64, 64), (2, 3, 64, 64)]
    assert seen[1][0][1] == (KEPT_VIEW, KEPT_VIEW * 1200 // 1500)  # the big photo's view, bounded
    assert seen[0][0] == [(96, 96), (96, 96)]  # generated watches (96 px) are kept at their own size


def test_ready_encoder_converts_once_then_leaves_the_encoder_alone(small_checkpoint):
    import torch

    from simclr_watches.retrieval.embed import ready_encoder

    enc, _ = load_encoder_file(small_checkpoint)
    enc.train()
    cpu = torch.device("cpu")
    ready = ready_encoder(enc, cpu)
    assert not ready.training
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in ready.parameters() if p.dim() == 4)
    moves = []
    ready.to = lambda *a, **k: moves.append(a) or type(ready).to(ready, *a, **k)  # count the conversions
    assert ready_encoder(ready, cpu) is ready and moves == []
    ready.train()  # anything not ready (here: training mode) is redone
    assert not ready_encoder(ready, cpu).training and moves
