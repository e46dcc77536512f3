"""What ``dlab`` checks before Hydra starts a run or a sweep, so that bad input changes nothing on disk.

In order, each refusal one line (:class:`~divergence_lab.config.checks.ConfigError`):

1. group choices on the command line (``divergence=nope``, ``study=nope``: the options, and the closest one);
2. composition: a key typo gets "did you mean" with the valid keys of that group, instead of Hydra's hint to
   add the key with ``+``;
3. the values, without importing torch (:func:`~divergence_lab.config.checks.validate_settings`); for a
   sweep, every value of every swept key is checked once (the number of compositions is the sum of the
   list lengths, not their product), and the sweeper's and launcher's own settings
   (:mod:`divergence_lab.config.sweep_checks`);
4. the checks that need the registry or torch (divergence parameters and kinds, a GPU trainer on a machine
   without one);
5. the folder: a run or sweep folder that holds another config is refused (:mod:`run_fingerprint`), or with
   ``ckpt_path=fresh`` its contents are moved aside; a grid that adds values to the swept keys of the sweep
   in its folder grows that sweep (:mod:`divergence_lab.sweep.growth`); an output folder that cannot be
   written is refused.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from divergence_lab.config.checks import (
    CONF_DIR,
    SEARCHPATH_OVERRIDE,
    check_group_choices,
    extra_config_dirs,
    group_options,
    unread_override,
    validate_divergence,
    validate_settings,
)
from divergence_lab.config.errors import ConfigError
from divergence_lab.run.fingerprint import check_run_dir, fingerprint_settings, move_aside
from divergence_lab.run.record import SWEEP_KEY_PREFIX
from divergence_lab.sweep.growth import record_sweep
from divergence_lab.sweep.status import GRID_SWEEPER

# Hydra flags that print something instead of running: nothing to check
INFORMATION_FLAGS = frozenset(
    {"-h", "--help", "--hydra-help", "--version", "-c", "--cfg", "-i", "--info", "-sc", "--shell-completion"}
)
LOCAL_LAUNCHER_HINTS = ("BasicLauncher", "JoblibLauncher", "LocalLauncher")
GPU_ACCELERATORS = ("gpu", "cuda")


@dataclass
class CommandLine:
    """The parts of a ``dlab`` command line that decide what is composed."""

    multirun: bool = False
    config_dir: Path | None = None
    config_name: str = "train"
    overrides: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)  # all of it, for the user's config folders


def parse_command_line(argv: Sequence[str]) -> CommandLine | None:
    """Split ``argv`` into Hydra's flags and the overrides; None for informational commands (``--help``)."""
    line = CommandLine(argv=list(argv))
    args = iter(argv)
    for arg in args:
        flag, _, inline = arg.partition("=") if arg.startswith("-") else (arg, "", "")
        if flag in INFORMATION_FLAGS:
            return None
        if flag in ("-m", "--multirun"):
            line.multirun = True
        elif flag in ("-cd", "--config-dir"):
            line.config_dir = Path(inline or next(args, "."))
        elif flag in ("-cn", "--config-name"):
            line.config_name = inline or next(args, "train")
        elif flag in ("-cp", "--config-path", "--experimental-rerun"):
            return None  # another primary config location or a rerun: Hydra handles it alone
        elif not arg.startswith("-"):
            line.overrides.append(arg)
    return line


def compose_config(line: CommandLine, overrides: Sequence[str]) -> DictConfig:
    """Compose like the ``dlab`` app does (with the ``hydra`` node); errors become one-line ConfigErrors.

    As in Hydra, ``--config-dir`` adds a folder to the search path: the primary config comes from it when
    it holds one of that name (``-cd <dir> -cn <name>``), else from the package, with the folder's groups
    (``<dir>/data/mine.yaml``, ``<dir>/study/mine.yaml``) found beside the package's.
    """
    overrides = list(overrides)
    own_primary = line.config_dir is not None and (line.config_dir / f"{line.config_name}.yaml").is_file()
    if own_primary:
        context = initialize_config_dir(str(line.config_dir.resolve()), version_base="1.3")
    else:
        context = initialize_config_module("divergence_lab.conf", version_base="1.3")
        given = any(o.startswith(SEARCHPATH_OVERRIDE) for o in overrides)
        if line.config_dir is not None and not given:
            overrides.append(f"{SEARCHPATH_OVERRIDE}[file://{line.config_dir.resolve()}]")
    try:
        with context:
            return compose(line.config_name, overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        raise composition_error(line, overrides, error) from None


def composition_error(line: CommandLine, overrides: Sequence[str], error: BaseException) -> ConfigError:
    """One line for a composition error; a key typo names the group's valid keys and the closest one."""
    message = str(error)
    if message.startswith("Could not override '"):
        key = message.split("'")[1]
        parent, _, leaf = key.rpartition(".")
        others = [o for o in overrides if not o.split("=", 1)[0].lstrip("+~").startswith(key)]
        try:
            base = compose_config(line, others)
        except ConfigError:
            base = None
        node = OmegaConf.select(base, parent) if base is not None and parent else base
        if isinstance(node, DictConfig):
            keys = sorted(str(k) for k in node if k != "hydra")
            close = difflib.get_close_matches(leaf, keys, n=1)
            hint = f"did you mean {parent + '.' if parent else ''}{close[0]}? " if close else ""
            where = parent or "the config"
            return ConfigError(
                f"{key} is not a key of {where}; {hint}valid keys: {', '.join(keys)} "
                f"(to add a new key on purpose: +{key}=...)"
            )
    first = message.strip().splitlines()[0] if message.strip() else type(error).__name__
    return ConfigError(first.rstrip("."))


def _parse(overrides: Sequence[str]) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as error:
        raise ConfigError(str(error).strip().splitlines()[0]) from None


def swept_values(line: CommandLine, base: DictConfig) -> dict[str, list[Any] | None]:
    """``{override key: its values}`` of the sweep (the sweeper's params, then the command line's);
    None where the values are a range to sample from (Optuna's ``interval``)."""
    params = OmegaConf.select(base, "hydra.sweeper.params") or {}
    specs = [f"{key}={value}" for key, value in params.items()]
    specs += [o for o in line.overrides if "=" in o]
    swept: dict[str, list[Any] | None] = {}
    for override in _parse(specs):
        key = override.input_line.split("=", 1)[0] if override.input_line else override.key_or_group
        if not override.is_sweep_override():
            swept.pop(key, None)  # a fixed command-line value replaces the sweeper's list
            continue
        try:
            swept[key] = list(override.sweep_string_iterator())
        except (HydraException, TypeError, ValueError):
            swept[key] = None  # interval(): sampled, not enumerable
    return swept


def _sweep_specs(line: CommandLine) -> list[tuple[str, str]]:
    """``(key, values)`` of the command line's sweep overrides, as typed."""
    return [
        (o.input_line.split("=", 1)[0], o.input_line.split("=", 1)[1])
        for o in _parse([o for o in line.overrides if "=" in o])
        if o.is_sweep_override() and o.input_line
    ]


def sweep_settings(base: DictConfig, line: CommandLine, swept: dict[str, list[Any] | None]) -> dict[str, Any]:
    """The sweep's fixed settings plus one ``sweep:<key>`` entry per swept key (its values or range)."""
    params = OmegaConf.select(base, "hydra.sweeper.params") or {}
    given = dict(_sweep_specs(line))  # the command line's lists win over the sweeper's
    settings = fingerprint_settings(base)
    for key in swept:
        settings[SWEEP_KEY_PREFIX + key] = given.get(key, str(params.get(key)))
    return settings


def job_configs(
    line: CommandLine, base: DictConfig, fixed: list[str], swept: dict[str, list[Any] | None]
) -> Iterator[DictConfig]:
    """``base``, then one config per value of each swept key (the other swept keys at their defaults)."""
    groups = group_options([CONF_DIR, *extra_config_dirs(line.argv)])
    yield base
    for key, values in swept.items():
        for value in values or []:
            plain_key = key.lstrip("+~")
            if plain_key in groups or key.startswith(("+", "~")):
                yield compose_config(line, [*fixed, f"{key}={value}"])
            else:
                job = base.copy()
                (override,) = _parse([f"{key}={value}"])
                OmegaConf.update(job, plain_key, override.value(), force_add=True)
                yield job


def check_reads_across(configs: list[DictConfig], fixed: list[str], swept: list[str]) -> None:
    """An override no job reads is refused; so is a swept one that some job ignores (its values would give
    that job's configuration identical runs under different labels)."""
    for override in fixed:
        reasons = [unread_override(cfg, override) for cfg in configs]
        if all(reasons):
            raise ConfigError(str(reasons[0]))
    for override in swept:
        for cfg in configs:
            if (reason := unread_override(cfg, override)) is not None:
                raise ConfigError(f"{reason} (sweeping it would repeat identical runs)")


def check_values(
    line: CommandLine, base: DictConfig, fixed: list[str], swept: dict[str, list[Any] | None]
) -> list[DictConfig]:
    """Validate every composed job config without torch; return them for the checks that need it."""
    from divergence_lab.config.sweep_checks import check_sweep_settings

    configs = list(job_configs(line, base, fixed, swept))
    for cfg in configs:
        validate_settings(cfg)
    swept_overrides = [f"{key}={','.join(map(str, values or ['...']))}" for key, values in swept.items()]
    check_reads_across(configs, fixed, swept_overrides)
    if line.multirun:
        check_sweep_settings(configs[0], [f"{key}={value}" for key, value in _sweep_specs(line)])
        check_report_settings(configs[0])
    return configs


def check_report_settings(cfg: DictConfig) -> None:
    """The sweep's ``report`` section as ``dlab-report`` will read it (test, correction, level, power, margins
    and effects of interest), refused in one line before any job starts."""
    from divergence_lab.report.errors import ReportError
    from divergence_lab.report.testing import report_settings

    section = OmegaConf.to_container(cfg.report, resolve=True) if "report" in cfg else {}
    try:
        report_settings(section, [str(metric) for metric in section.get("metrics") or []])
    except ReportError as error:
        raise ConfigError(str(error)) from None


def check_runtime(configs: list[DictConfig]) -> None:
    """Checks that import torch: the divergences' parameters and kinds, a GPU trainer without a GPU."""
    for cfg in configs:
        validate_divergence(cfg)
    launcher = str(OmegaConf.select(configs[0], "hydra.launcher._target_", default=""))
    runs_here = any(hint in launcher for hint in LOCAL_LAUNCHER_HINTS)
    wants_gpu = [c for c in configs if str(c.trainer.get("accelerator", "cpu")) in GPU_ACCELERATORS]
    if wants_gpu and runs_here:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.accelerator={wants_gpu[0].trainer.accelerator} but this machine has no usable GPU "
                f"(torch.cuda.is_available() is False); use trainer=cpu, or a SLURM launcher for GPU nodes"
            )


def check_writable(folder: Path) -> None:
    """Refuse an output folder that cannot be created or written (before Hydra creates anything)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the output folder {folder}: {existing} is not a writable directory")


@dataclass
class Verdict:
    """What the checks leave for the launch: a notice to print, and overrides that pin what they checked."""

    notice: str | None = None
    pinned: list[str] = field(default_factory=list)


def prepare_folder(line: CommandLine, base: DictConfig, swept: dict[str, list[Any] | None]) -> Verdict:
    """Refuse a folder of another config, or move it aside for ``ckpt_path=fresh``; grow a grid sweep.

    A sweep folder is pinned (``hydra.sweep.dir=<the folder checked>``): its default name holds the time,
    which Hydra would otherwise resolve again a moment later into another folder.
    """
    fresh = base.get("ckpt_path") == "fresh"
    pinned = []
    growth = None
    if line.multirun:
        folder = Path(base.hydra.sweep.dir)
        check_writable(folder)
        settings = sweep_settings(base, line, swept)
        moved = move_aside(folder) if fresh else None
        grid = str(OmegaConf.select(base, "hydra.sweeper._target_", default="")).endswith(GRID_SWEEPER)
        growth = record_sweep(folder, settings, growable=grid)
        if not any(o.split("=", 1)[0] == "hydra.sweep.dir" for o in line.overrides):
            pinned.append(f"hydra.sweep.dir={folder}")
    else:
        folder = Path(base.hydra.run.dir)
        check_writable(folder)
        moved = move_aside(folder) if fresh else check_run_dir(folder, fingerprint_settings(base))
    notice = f"ckpt_path=fresh: moved the earlier contents of {folder} to {moved}" if moved else None
    return Verdict(growth.describe(folder) if growth else notice, pinned)


def preflight(argv: Sequence[str]) -> Verdict:
    """Run every check on a ``dlab`` command line; raise ConfigError, or return what the launch needs."""
    check_group_choices(argv)
    line = parse_command_line(argv)
    if line is None:
        return Verdict()
    parsed = _parse([o for o in line.overrides if "=" in o or o.startswith("~")])
    fixed = [o.input_line for o in parsed if not (line.multirun and o.is_sweep_override())]
    base = compose_config(line, fixed)
    swept = swept_values(line, base) if line.multirun else {}
    configs = check_values(line, base, fixed, swept)
    check_runtime(configs)
    return prepare_folder(line, base, swept)
