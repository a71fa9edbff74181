"""Finding the watch in a photo: a box head on the encoder's feature maps, trained on composites (issue 15)."""
