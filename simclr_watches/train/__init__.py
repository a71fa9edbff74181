"""SimCLR pretraining: config, Kornia augmentations, the catalog cache, the training loop, checkpoints."""
