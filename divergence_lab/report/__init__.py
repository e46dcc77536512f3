"""The report layer: ``dlab-report`` turns one sweep folder, or several merged, into tables, verdicts and
figures, without W&B.

:mod:`~divergence_lab.report.command` is the command; :mod:`~divergence_lab.report.collect` finds the sweeps
and reads and groups their jobs (:mod:`~divergence_lab.report.merging` checks that merged sweeps held the
same settings fixed); :mod:`~divergence_lab.report.statistics` holds the numbers (intervals, paired tests,
corrections, minimum detectable effects, equivalence tests), :mod:`~divergence_lab.report.testing` how a
study asks for them, :mod:`~divergence_lab.report.verdicts` the verdict words and the ranks from paired
tests, and :mod:`~divergence_lab.report.comparison` applies them per metric against a baseline;
:mod:`~divergence_lab.report.across_datasets` compares settings over datasets (Friedman, Nemenyi);
:mod:`~divergence_lab.report.selection` states model selection and the test set's noise floor;
:mod:`~divergence_lab.report.provenance` says what the runs shared and where they came from;
:mod:`~divergence_lab.report.metric_info` knows which way a metric is better and its range.
:mod:`~divergence_lab.report.tables` writes the text (``report.md``, the CSVs, the terminal),
:mod:`~divergence_lab.report.html_report` and :mod:`~divergence_lab.report.latex_table` the HTML page and
the LaTeX table; :mod:`~divergence_lab.report.forest`, :mod:`~divergence_lab.report.plots`,
:mod:`~divergence_lab.report.curves`, :mod:`~divergence_lab.report.lines`,
:mod:`~divergence_lab.report.reliability`, :mod:`~divergence_lab.report.confusion` and
:mod:`~divergence_lab.report.cd_diagram` the figures, in the shared style of
:mod:`~divergence_lab.report.figure_style`; :mod:`~divergence_lab.report.errors` holds what is refused or
skipped. :mod:`~divergence_lab.report.wandb_files` reads W&B's own run files.

Of the run layer the report imports :mod:`divergence_lab.run.record` alone (the run-record format:
``metrics.json``, ``teacher.json``, the fingerprint file names, and ``status.json`` through
:mod:`divergence_lab.report.job_status`), so it loads no deep-learning framework. The other files it reads are
Hydra's (``multirun.yaml``, ``.hydra/overrides.yaml``), a run's ``fingerprint.json`` / ``config.yaml``, a
sweep's ``sweep_fingerprint.json``, a run's ``csv/metrics.csv`` and the figures' data some callbacks leave in
a run folder (``reliability.json``, ``gcd_curve.json``, ``confusion.json``).
"""
