"""simclr-watches: visual similarity search for a watch catalog, learned without labels."""

__version__ = "0.1.0"
