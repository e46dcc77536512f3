"""The report layer: ``dlab-report`` turns a sweep folder into tables and figures, without W&B.

:mod:`~divergence_lab.report.command` is the command; :mod:`~divergence_lab.report.collect` finds the sweep
and reads and groups its jobs; :mod:`~divergence_lab.report.tables` and :mod:`~divergence_lab.report.plots`
write the table and the figures, :mod:`~divergence_lab.report.curves` and :mod:`~divergence_lab.report.lines`
the per-epoch curves and the metrics against a numeric sweep key; :mod:`~divergence_lab.report.errors`
holds what is refused or skipped. :mod:`~divergence_lab.report.wandb_files` reads W&B's own run files.

Of the run layer the report imports :mod:`divergence_lab.run.record` alone (the run-record format:
``metrics.json``, and ``status.json`` through :mod:`divergence_lab.sweep.status`), so it loads no
deep-learning framework. The other files it reads are Hydra's (``multirun.yaml``, ``.hydra/overrides.yaml``)
and the figures' data some callbacks leave in a run folder (``reliability.json``, ``gcd_curve.json``).
"""
