"""divergence_lab's Hydra plugins. Hydra loads sweepers and launchers only from the ``hydra_plugins``
namespace, hence this package: ``optuna_sweeper.ResumableOptunaSweeper`` (``hparams_search=...``),
``grid_sweeper.StableBasicSweeper`` (the default grid sweeper, ``hydra/sweeper=basic``, whose job folders
stay put when a sweep grows) and ``local_launcher.CappedLocalLauncher`` (``hydra/launcher=submitit_local``);
the last two are registered in code under the names Hydra and its plugin already own."""
