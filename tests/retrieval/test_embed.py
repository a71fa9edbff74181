import numpy as np

from simclr_watches.data.images import scan_images
from simclr_watches.retrieval.embed import embed_paths
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
