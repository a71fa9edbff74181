"""SimCLR pretraining, one concern per module, in the order a run uses them.

``config`` (what a run depends on) -> ``catalog_cache`` (the catalog decoded once) ->
``augment`` (views, in batches on the device) -> ``simclr`` (encoder + head, optimiser)
-> ``loop`` (schedule, step, epoch; ``divergence`` stops it on a NaN loss) -> ``proxy``
(the per-epoch metric) -> ``state`` (checkpoints) -> ``run`` (the run folder, resume,
the epochs; ``distributed`` under torchrun). ``preview`` draws the views for
``augment-preview``.
"""
