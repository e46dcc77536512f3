"""What ``dlab --help`` shows: the header, the named studies, the sweep launchers, the config groups and
the composed config, rendered from the help template of ``train.yaml`` (:func:`render_help`).

The sections are generated at every call, so that a new study, launcher preset or option is listed without
editing the help: a study is named by its file in a ``study/`` config folder (the package's, and those of
``-cd <dir>``) and described by the first comment line below its ``# @package`` line; the launchers are the
options of ``hydra/launcher`` that Hydra finds (its own, the installed plugins', the package's presets); the
config groups and their options are the folders and files of every config folder.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path

from divergence_lab.config.checks import CONF_DIR, extra_config_dirs, group_options, hydra_group_options
from divergence_lab.ground.errors import ConfigError

HELP_SECTIONS_VARIABLE = "DLAB_HELP_SECTIONS"  # how the sections reach the template of train.yaml
HELP_FLAGS = frozenset({"-h", "--help"})
STUDY_GROUP = "study"
LAUNCHER_GROUP = "hydra/launcher"
EXAMPLE_STUDY = "kd_divergences"
PACKAGE_DIRECTIVE = "# @package"
HELP_WIDTH = 110  # where a group's option list wraps (continuation lines indented under its first option)
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
    return hydra_group_options(LAUNCHER_GROUP)


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


def config_groups_section(config_dirs: Iterable[Path]) -> str:
    """The config groups and their options, read from the config folders' files: one ``group: a, b, c``
    entry per group, sorted, wrapped at :data:`HELP_WIDTH`. Hydra's own groups are left out (the launchers
    have their section)."""
    options = group_options(config_dirs)
    entries = [
        textwrap.fill(
            ", ".join(sorted(names)),
            width=HELP_WIDTH,
            initial_indent=f"{group}: ",
            subsequent_indent=" " * (len(group) + 2),
            break_long_words=False,
            break_on_hyphens=False,
        )
        for group, names in sorted(options.items())
        if group != "hydra" and not group.startswith("hydra/")
    ]
    heading = "== Configuration groups == compose your configuration from those groups (group=option)"
    return "\n".join([heading, "", *entries])


def help_sections(argv: Sequence[str]) -> str:
    """The studies, launchers and config groups sections for ``dlab <argv> --help``, ready for Hydra's help
    template (``$`` doubled: the template is a :class:`string.Template`)."""
    config_dirs = [CONF_DIR, *extra_config_dirs(argv)]
    sections = [
        studies_section(config_dirs),
        launchers_section(launcher_names()),
        config_groups_section(config_dirs),
    ]
    return "\n\n".join(sections).replace("$", "$$") + "\n"


def render_help(argv: Sequence[str]) -> str | None:
    """The text of ``dlab <argv> --help``, or None where Hydra must render it (``-cp``, a rerun, overrides
    that do not compose as one run).

    Hydra's own help fills every ``$...GROUPS`` field of the template by composing each config group
    through its config repository (about 120 repository copies here, more than a second), even where the
    template does not show them. This composes the config once, for ``$CONFIG``. The template reads the
    generated sections from ``HELP_SECTIONS_VARIABLE``, which the caller sets first (Hydra's rendering reads
    it too).
    """
    import string

    from omegaconf import OmegaConf, open_dict

    from divergence_lab.entry.preflight import compose_config, parse_command_line

    line = parse_command_line([arg for arg in argv if arg not in HELP_FLAGS])
    if line is None:
        return None
    try:
        cfg = compose_config(line, [o for o in line.overrides if "=" in o or o.startswith("~")])
    except ConfigError:
        return None
    template = str(cfg.hydra.help.template)
    with open_dict(cfg):
        del cfg["hydra"]
    return string.Template(template).safe_substitute(CONFIG=OmegaConf.to_yaml(cfg))
