"""divergence_lab's Hydra plugins. Hydra loads sweepers and launchers only from the ``hydra_plugins``
namespace, hence this package: ``optuna_sweeper.ResumableOptunaSweeper`` (``hparams_search=...``) and
``local_launcher.CappedLocalLauncher`` (``hydra/launcher=submitit_local``, registered in code because the
plugin already owns that name)."""
