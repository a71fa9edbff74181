"""Images in: finding and decoding catalog photos, the foreground mask, synthetic catalogs and simulated user photos."""
