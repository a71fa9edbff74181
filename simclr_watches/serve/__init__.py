"""The web service: ``simclr-watches serve INDEX`` answers a page and a JSON API from one loaded model.

Modules: the limits and switches (settings), the bounded multipart reader (form), the
catalog behind the API with its locks and counters (service, stats, thumbnails,
feedback), the HTTP routes (app) and the page (static/index.html). serve may import
retrieval, data, weights and core; never the CLI, train or evaluation.
"""
