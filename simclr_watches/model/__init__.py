"""The encoder: architectures (EfficientNet-Lite0, ResNet), preprocessing, ensembles."""
