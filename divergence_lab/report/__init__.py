"""The report layer: ``dlab-report`` turns a sweep folder into tables, statistics and figures, without W&B.

:mod:`~divergence_lab.report.command` is the command; :mod:`~divergence_lab.report.collect` finds the sweep
and reads and groups its jobs; :mod:`~divergence_lab.report.statistics` holds the numbers (intervals, paired
tests, ranks) and :mod:`~divergence_lab.report.comparison` applies them per metric against a baseline;
:mod:`~divergence_lab.report.provenance` says what the runs shared and where they came from;
:mod:`~divergence_lab.report.metric_info` knows which way a metric is better.
:mod:`~divergence_lab.report.tables` writes the text; :mod:`~divergence_lab.report.plots`,
:mod:`~divergence_lab.report.curves`, :mod:`~divergence_lab.report.lines` and
:mod:`~divergence_lab.report.reliability` the figures, in the shared style of
:mod:`~divergence_lab.report.figure_style`; :mod:`~divergence_lab.report.errors` holds what is refused or
skipped. :mod:`~divergence_lab.report.wandb_files` reads W&B's own run files.

Of the run layer the report imports :mod:`divergence_lab.run.record` alone (the run-record format:
``metrics.json``, ``teacher.json``, and ``status.json`` through :mod:`divergence_lab.sweep.status`), so it
loads no deep-learning framework. The other files it reads are Hydra's (``multirun.yaml``,
``.hydra/overrides.yaml``), a run's ``fingerprint.json`` / ``config.yaml``, its ``csv/metrics.csv`` and the
figures' data some callbacks leave in a run folder (``reliability.json``, ``gcd_curve.json``).
"""
