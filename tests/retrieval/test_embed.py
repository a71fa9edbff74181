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

