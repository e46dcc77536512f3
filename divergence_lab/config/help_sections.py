"""The two sections ``dlab --help`` shows after its header: the named studies and the sweep launchers.

Both are generated at every call, so that a new study file or launcher preset is listed without editing the
help: a study is named by its file in a ``study/`` config folder (the package's, and those of ``-cd <dir>``)
and described by the first comment line below its ``# @package`` line; the launchers are the options of
``hydra/launcher`` that Hydra finds (its own, the installed plugins', the package's presets).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from divergence_lab.config.checks import CONF_DIR, extra_config_dirs

HELP_SECTIONS_VARIABLE = "DLAB_HELP_SECTIONS"  # how the sections reach the template of train.yaml
HELP_FLAGS = frozenset({"-h", "--help"})
STUDY_GROUP = "study"
LAUNCHER_GROUP = "hydra/launcher"
EXAMPLE_STUDY = "kd_divergences"
PACKAGE_DIRECTIVE = "# @package"
# what each known launcher does, and the overrides its example adds; others get a plain example
LAUNCHER_USAGE: dict[str, tuple[str, str]] = {
    "basic": ("the jobs one after another in this process (the default)", ""),
    "joblib": ("local worker processes side by side", "hydra.launcher.n_jobs=2"),
    "submitit_local": ("submitit's local executor, max_parallel_jobs at a time", ""),
    "submitit_slurm": ("submitit's SLURM executor as the plugin ships it", "hydra.launcher.partition=gpu"),
    "slurm": ("one SLURM job array, one GPU per job (conf/local/slurm.yaml)", "trainer=gpu"),
    "slurm_cpu": ("one SLURM job array on CPU nodes, one CPU and 2 GB per job", ""),
}


def study_description(path: Path) -> str:
    """The first comment line of a study file that is not its ``# @package`` line, without the ``#``."""
    for line in path.read_text().splitlines():
        if line.startswith("#") and not line.startswith(PACKAGE_DIRECTIVE):
            return line.lstrip("#").strip()
    return ""


def study_files(config_dirs: Iterable[Path]) -> dict[str, Path]:
    """``{study name: its file}`` over the ``study/`` folders of ``config_dirs`` (a later folder wins)."""
    return {path.stem: path for root in config_dirs for path in sorted((root / STUDY_GROUP).glob("*.yaml"))}


def launcher_names() -> list[str]:
    """The options of ``hydra/launcher`` on Hydra's search path with the package's configs."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_module("divergence_lab.conf", version_base="1.3"):
        return sorted(GlobalHydra.instance().config_loader().get_group_options(LAUNCHER_GROUP))


def _aligned(rows: list[tuple[str, str]]) -> list[str]:
    width = max((len(name) for name, _ in rows), default=0)
    return [f"  {name:<{width}}  {text}" for name, text in rows]


def studies_section(config_dirs: Iterable[Path]) -> str:
    """One line per study: its name and description, under a line that shows how to run one."""
    files = study_files(config_dirs)
    rows = [(name, study_description(path)) for name, path in sorted(files.items())]
    heading = (
        f"== Studies == run one: dlab -m study=<name>; narrow its grid from the command line: "
        f"dlab -m study={EXAMPLE_STUDY} seed=0"
    )
    return "\n".join([heading, *_aligned(rows)])


def launchers_section(names: Sequence[str]) -> str:
    """One line per launcher: an example command and what the launcher does."""
    rows = []
    for name in names:
        what, extra = LAUNCHER_USAGE.get(name, ("", ""))
        command = " ".join(
            filter(None, ["dlab -m", f"hydra/launcher={name}", extra, f"study={EXAMPLE_STUDY}"])
        )
        rows.append((name, f"{command}{'   # ' + what if what else ''}"))
    heading = "== Launchers == where the jobs of a sweep run (hydra/launcher=<name>)"
    return "\n".join([heading, *_aligned(rows)])


def help_sections(argv: Sequence[str]) -> str:
    """The studies and launchers sections for ``dlab <argv> --help``, ready for Hydra's help template
    (``$`` doubled: the template is a :class:`string.Template`)."""
    config_dirs = [CONF_DIR, *extra_config_dirs(argv)]
    text = f"{studies_section(config_dirs)}\n\n{launchers_section(launcher_names())}\n"
    return text.replace("$", "$$")
