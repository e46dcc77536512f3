"""What ``dlab`` checks before Hydra starts a run or a sweep, so that bad input changes nothing on disk.

In order, each refusal one line (:class:`~divergence_lab.config.checks.ConfigError`):

1. group choices on the command line (``divergence=nope``, ``study=nope``, ``hydra/launcher=nope``: the
   options, and the closest one);
2. composition: a key typo gets "did you mean" with the valid keys of that group, instead of Hydra's hint to
   add the key with ``+``; a study or Optuna search chosen without ``-m`` is refused with the command
   that runs it;
3. the values, without importing torch (:func:`~divergence_lab.config.checks.validate_settings`), and the
   declared contract of data, networks and method
   (:func:`~divergence_lab.config.checks.check_compatibility`); for a sweep, every value of every swept key
   is checked once (the number of compositions is the sum of the list lengths, not their product), and the
   sweeper's and launcher's own settings (:mod:`divergence_lab.entry.sweep_checks`);
4. the checks that need the registry or torch: every ``data`` / ``model`` key is a setting its class takes
   (a ``+key`` it would not take is refused), the data modules are constructed (and set up where that is
   cheap) and the networks built on the meta device, so that what their constructors refuse is refused
   here; divergence parameters and kinds, the members a method configures itself, a GPU trainer on a
   machine without one;
5. the folder: an empty ``hydra.run.dir`` / ``hydra.sweep.dir`` (an unset shell variable) is refused, and so
   are run and sweep folders nested in each other; a run or sweep folder that holds another config is
   refused (:mod:`run_fingerprint`), or with ``ckpt_path=fresh`` its contents are moved aside; a grid that
   adds values to the swept keys of the sweep in its folder grows that sweep
   (:mod:`divergence_lab.sweep.growth`); an output folder that cannot be written is refused.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
    DATA_CONTRACTS,
    MODEL_CONTRACTS,
    SEARCHPATH_OVERRIDE,
    TEACHER_MODEL_CHOICE,
    DataServes,
    check_compatibility,
    check_group_choices,
    check_method_settings,
    extra_config_dirs,
    find_contract,
    group_options,
    load_contracts,
    reads,
    unread_override,
    validate_divergence,
    validate_settings,
)
from divergence_lab.ground.errors import ConfigError
from divergence_lab.ground.record_format import (
    RUN_FINGERPRINT_FILE,
    STATUS_FILE,
    SWEEP_FINGERPRINT_FILE,
    SWEEP_KEY_PREFIX,
)
from divergence_lab.report.job_status import GRID_SWEEPER
from divergence_lab.run.fingerprint import check_run_dir, fingerprint_settings, move_aside
from divergence_lab.sweep.growth import record_sweep

# Hydra flags that print something instead of running: nothing to check
INFORMATION_FLAGS = frozenset(
    {"-h", "--help", "--hydra-help", "--version", "-c", "--cfg", "-i", "--info", "-sc", "--shell-completion"}
)
LOCAL_LAUNCHER_HINTS = ("BasicLauncher", "JoblibLauncher", "LocalLauncher")
GPU_ACCELERATORS = ("gpu", "cuda")
SWEEP_GROUPS = ("study", "hparams_search")  # groups whose options are sweeps: they need -m
MULTIRUN_FILE = "multirun.yaml"  # Hydra's record of a sweep, in its folder
RUN_MARKERS = (RUN_FINGERPRINT_FILE, STATUS_FILE)  # a folder holding one of them is a run's
SWEEP_MARKERS = (SWEEP_FINGERPRINT_FILE, MULTIRUN_FILE)  # ... a sweep's
# how many levels above and below a new run or sweep folder to look for earlier runs and sweeps (a sweep's
# jobs are one level below it; a bound keeps a stray marker high up, in /tmp, from blocking every run)
NESTING_SCAN_DEPTH = 4
NESTING_SCAN_FOLDERS = 2000  # ... and at most how many folders (a run folder given as the home folder)
# keys of a ``_target_`` node that instantiate() takes itself, and the arguments the code passes
INSTANTIATE_KEYS = frozenset({"_target_", "_recursive_", "_convert_", "_partial_", "_args_"})
DATA_CODE_ARGUMENTS = frozenset({"self", "seed"})
MODEL_CODE_ARGUMENTS = frozenset(
    {"self", "in_shape", "num_classes", "vocab_size", "pad_token_id", "eos_token_id", "bos_token_id"}
)
LABEL_KEYS = {"data": frozenset({"name"})}  # keys the code removes before instantiating (a label)
SIGNATURE_NODES = ("data", "data.base", "model", "method.teacher.model")  # the ``_target_`` nodes checked
METHOD_MEMBERS = {"sinkhorn": "sinkhorn_batch", "ranking": "pld"}  # method.<key>: the registry member it sets
CLASSIFIER = "classifier"  # the model family of image and vector networks (conf/model/contracts.yml)
CAUSAL_LM = "causal_lm"  # ... of causal language models
FALLBACK_CLASSES = 2  # the class count a network is built with in the pre-flight when the data does not say


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
            settings = target_settings(node, parent)
            if settings is not None and leaf not in settings:  # a key its class would not take
                return ConfigError(
                    f"{key} is not a key of {where} nor a setting of its class "
                    f"{node._target_}; {hint}valid keys: {', '.join(keys)}"
                )
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
    from divergence_lab.entry.sweep_checks import check_sweep_settings

    configs = list(job_configs(line, base, fixed, swept))
    config_dirs = [CONF_DIR, *extra_config_dirs(line.argv)]
    for cfg in configs:
        validate_settings(cfg)
        check_compatibility(cfg, config_dirs)
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


def check_runtime(configs: list[DictConfig], config_dirs: Sequence[Path] = (CONF_DIR,)) -> None:
    """Checks that import torch: the settings the data and model classes take, their constructors' checks
    (:func:`check_data_modules`), the divergences' parameters and kinds, the method module's own rules
    (:func:`check_method_settings`), a GPU trainer without a GPU."""
    for cfg in configs:
        check_target_settings(cfg)
        validate_divergence(cfg)
        check_method_divergences(cfg)
        check_method_settings(cfg)
    check_data_modules(configs, config_dirs)
    launcher = str(OmegaConf.select(configs[0], "hydra.launcher._target_", default=""))
    runs_here = any(hint in launcher for hint in LOCAL_LAUNCHER_HINTS)
    if runs_here:
        check_teacher_caches(configs)
    wants_gpu = [c for c in configs if str(c.trainer.get("accelerator", "cpu")) in GPU_ACCELERATORS]
    if wants_gpu and runs_here:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.accelerator={wants_gpu[0].trainer.accelerator} but this machine has no usable GPU "
                f"(torch.cuda.is_available() is False); use trainer=cpu, or a SLURM launcher for GPU nodes"
            )


def check_teacher_caches(configs: list[DictConfig]) -> None:
    """Refuse a teacher cache that can neither serve a teacher nor take one: a method with a teacher whose
    ``paths.teacher_cache`` cannot be written (by this user's permissions, or a file in the way) and holds no
    teacher. A read-only cache that holds teachers passes: the run loads the teacher it needs from it, and
    refuses in one line, before training, one the cache lacks."""
    for cfg in configs:
        if not isinstance(cfg.method.get("teacher"), DictConfig) or "paths" not in cfg:
            continue
        cache = Path(str(cfg.paths.teacher_cache))
        existing, writable = writable_ancestor(cache)
        holds_teachers = cache.is_dir() and any(not entry.name.startswith(".") for entry in cache.iterdir())
        if not writable and not holds_teachers:
            raise ConfigError(
                f"the teacher cache {cache} cannot be written ({existing} is not a writable directory) and "
                f"holds no teacher; point paths.teacher_cache=<a writable folder> elsewhere"
            )


def target_settings(node: Any, path: str) -> list[str] | None:
    """The settings the class or function of the ``_target_`` node at ``path`` takes from its config (its
    parameters, less those the code passes: a data module's ``seed``, a network's ``in_shape`` ...); None
    when it takes any (``**kwargs``), has no ``_target_`` or cannot be imported (then instantiating it
    names the problem)."""
    import inspect

    from hydra.utils import get_object

    if not isinstance(node, DictConfig) or "_target_" not in node:
        return None
    try:
        parameters = inspect.signature(get_object(str(node._target_))).parameters.values()
    except (ImportError, AttributeError, ValueError, TypeError, HydraException):
        return None
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        return None
    passed = DATA_CODE_ARGUMENTS if path.split(".")[0] == "data" else MODEL_CODE_ARGUMENTS
    return sorted(parameter.name for parameter in parameters if parameter.name not in passed)


def check_target_settings(cfg: DictConfig) -> None:
    """Every key of the ``data`` and ``model`` nodes (and the teacher's model, a GCD base) is a setting its
    class takes: a key added with ``+`` that the class does not take is refused, naming the settings."""
    choices = dict(OmegaConf.select(cfg, "hydra.runtime.choices") or {})
    for path in SIGNATURE_NODES:
        node = OmegaConf.select(cfg, path)
        settings = target_settings(node, path)
        if settings is None:
            continue
        group = path.split(".")[0]
        taken = set(settings) | INSTANTIATE_KEYS | LABEL_KEYS.get(path, frozenset())
        unknown = sorted(str(key) for key in node if str(key) not in taken)
        if unknown:
            choice = choices.get(TEACHER_MODEL_CHOICE if path == "method.teacher.model" else group)
            chosen = f" ({group}={choice})" if choice and path in ("data", "model") else ""
            raise ConfigError(
                f"{path}.{unknown[0]} is not a setting of {node._target_}{chosen}; its settings: "
                f"{', '.join(settings)}"
            )


def check_data_modules(configs: list[DictConfig], config_dirs: Sequence[Path]) -> None:
    """Construct each distinct data module (its constructor checks its values); set it up where the
    declared contract says that is cheap (embedded or generated data: what its setup refuses, a sentence
    longer than ``data.max_length``, stops here); and build each network it reads for it, on PyTorch's meta
    device (no memory, no random numbers), with the data's real shape where it was set up, else with the
    declared one. So values those classes refuse (``data.val_fraction + data.test_fraction``,
    ``model.depth``, ``model.sizes``) stop before a run folder exists. Networks read from a folder
    (``model.path``) and data read from files are left to the run."""
    from divergence_lab.ground.targets import instantiate_target

    data_contracts = load_contracts(DATA_CONTRACTS, config_dirs)
    model_contracts = load_contracts(MODEL_CONTRACTS, config_dirs)
    seen: set[str] = set()
    modules: dict[str, Any] = {}  # data config -> its module, constructed (and set up) once
    for cfg in configs:
        teacher = OmegaConf.select(cfg, "method.teacher.model")
        key = OmegaConf.to_yaml({"data": cfg.data, "model": cfg.get("model"), "teacher": teacher})
        if key in seen:
            continue
        seen.add(key)
        found = find_contract(data_contracts, None, cfg.data)
        served = DataServes(found[0], found[1], cfg.data) if found else None
        data_key = OmegaConf.to_yaml(cfg.data)
        if data_key not in modules:
            # resolved first: a copy of the node alone cannot follow ${model.path}-style interpolations
            data = OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True))
            arguments = OmegaConf.masked_copy(data, [k for k in data if k not in LABEL_KEYS["data"]])
            modules[data_key] = instantiate_target(arguments, "data", seed=cfg.seed)
            if served is not None and served.cheap_setup:
                with quiet_logging():  # the run sets it up again and shows its warnings then
                    modules[data_key].setup()
        if served is None or (not served.cheap_setup and served.shape is None):
            continue
        datamodule = modules[data_key]
        for path, node in network_slots(cfg):
            declared = find_contract(model_contracts, None, node)
            if declared is not None and "path" not in node:
                build_on_meta(node, path, declared[1], datamodule if served.cheap_setup else served)


@contextmanager
def quiet_logging() -> Iterator[None]:
    """Hold back log records up to warnings (a tokenizer's notes) while the pre-flight sets data up: the
    refusal stays the only line on stderr."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def network_slots(cfg: DictConfig) -> list[tuple[str, DictConfig]]:
    """``(key, config)`` of each network the method reads: ``model`` (unless the method builds its own)
    and the teacher's ``method.teacher.model``."""
    slots = [("model", cfg.model)] if reads(cfg.method, "model") and "model" in cfg else []
    if isinstance(cfg.method.get("teacher"), DictConfig) and "model" in cfg.method.teacher:
        slots.append(("method.teacher.model", cfg.method.teacher.model))
    return slots


def build_on_meta(node: DictConfig, path: str, declared: dict[str, Any], data: Any) -> None:
    """Build the network of ``node`` (at ``path``) on the meta device: for a set-up data module as the run
    builds it, for a :class:`DataServes` from its declared shape (image and vector networks only); its own
    refusals (one-line ConfigErrors) come through, naming ``path``."""
    import torch

    from divergence_lab.ground.targets import instantiate_target
    from divergence_lab.models import build_network
    from divergence_lab.models.causal_lm import build_causal_lm

    with torch.device("meta"):
        if isinstance(data, DataServes):
            if data.input_kind in declared.get("input_kinds", []) and declared.get("family") == CLASSIFIER:
                classes = data.classes or FALLBACK_CLASSES
                instantiate_target(node, path, in_shape=list(data.shape), num_classes=classes)
        elif declared.get("family") == CAUSAL_LM and hasattr(data, "vocab_size"):
            tokens = (data.pad_token_id, data.eos_token_id, data.bos_token_id)
            build_causal_lm(node, data.vocab_size, *tokens, path)
        elif declared.get("family") != CAUSAL_LM and hasattr(data, "input_shape"):
            build_network(node, data)


def _build_member(key: str, name: Any, params: dict[str, Any]) -> None:
    """Build the registry member ``name`` with ``params``; a refusal names the config key."""
    from divergence_lab import divergences

    try:
        divergences.build(str(name), **params)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{key}: {error}") from None


def check_method_divergences(cfg: DictConfig) -> None:
    """The registry members a method configures itself, built as its builder will build them: BD-KD's
    ``method.divergences`` at ``method.temperature``, SinKD's ``method.sinkhorn`` (``sinkhorn_batch``) and
    PLD's ``method.ranking`` (``pld``): an unknown name or a parameter out of range stops here."""
    method = cfg.method
    roles = method.get("divergences")
    if isinstance(roles, DictConfig) and "temperature" in method:
        for role, name in roles.items():
            params = {"temperature": method.temperature, "t_squared": True}
            _build_member(f"method.divergences.{role}", name, params)
    for key, member in METHOD_MEMBERS.items():
        if isinstance(method.get(key), DictConfig) and reads(method, f"method.{key}"):
            _build_member(f"method.{key}", member, dict(OmegaConf.to_container(method[key], resolve=True)))


def writable_ancestor(folder: Path) -> tuple[Path, bool]:
    """``(the folder itself or its nearest existing ancestor, whether this user can create files there)``:
    where creating ``folder`` would start, and whether it could."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing, existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


def check_writable(folder: Path) -> None:
    """Refuse an output folder that cannot be created or written (before Hydra creates anything)."""
    existing, writable = writable_ancestor(folder)
    if not writable:
        raise ConfigError(f"cannot write the output folder {folder}: {existing} is not a writable directory")


def check_run_mode(line: CommandLine, base: DictConfig) -> None:
    """A study or an Optuna search chosen without ``-m`` would run one default job: refused, with the
    command that runs the sweep."""
    if line.multirun:
        return
    choices = dict(OmegaConf.select(base, "hydra.runtime.choices") or {})
    for group in SWEEP_GROUPS:
        if choices.get(group) is not None:
            command = " ".join(["dlab", "-m", *line.argv])
            raise ConfigError(
                f"{group}={choices[group]} is a sweep, and without -m dlab would run one job of its default "
                f"config; run it with: {command}"
            )


def output_folder(base: DictConfig, key: str) -> Path:
    """``hydra.run.dir`` or ``hydra.sweep.dir`` as a folder; an empty or blank value (an unset shell
    variable) is refused: it would put the run's files among those of the current folder."""
    value = OmegaConf.select(base, key)
    if value is None or not str(value).strip():
        shown = "null" if value is None else repr(str(value))
        raise ConfigError(
            f"{key} is empty (got {shown}: an unset shell variable?); give a folder, or leave {key} out "
            f"for the default under paths.output_root"
        )
    if key == "hydra.sweep.dir":
        subdir = OmegaConf.to_container(base.hydra.sweep, resolve=False).get("subdir")  # ${hydra.job.num}
        if subdir is None or not str(subdir).strip():
            raise ConfigError(
                "hydra.sweep.subdir is empty: every job would write into the sweep folder itself; "
                "leave it out for one folder per job (${hydra.job.num})"
            )
    return Path(str(value))


def _marker(folder: Path, markers: Sequence[str]) -> str | None:
    return next((name for name in markers if (folder / name).is_file()), None)


def _folders_below(folder: Path) -> Iterator[Path]:
    """The folders under ``folder``, breadth first, at most :data:`NESTING_SCAN_DEPTH` levels deep and
    :data:`NESTING_SCAN_FOLDERS` in all."""
    level, seen = [folder], 0
    for _ in range(NESTING_SCAN_DEPTH):
        below = []
        for parent in level:
            try:
                children = [child for child in parent.iterdir() if child.is_dir() and not child.is_symlink()]
            except OSError:
                continue
            for child in children:
                seen += 1
                if seen > NESTING_SCAN_FOLDERS:
                    return
                yield child
                below.append(child)
        level = below


def check_nesting(folder: Path, kind: str) -> None:
    """Refuse a run or sweep folder (``kind``) inside an earlier run or sweep folder, or one that is not
    itself a run or sweep folder but holds earlier runs or sweeps below it (``hydra.run.dir=outputs``): the
    records of the two would mix. Folders are told by their marker files (``fingerprint.json``,
    ``status.json`` for a run; ``sweep_fingerprint.json``, ``multirun.yaml`` for a sweep), looked for
    :data:`NESTING_SCAN_DEPTH` levels up and down."""
    absolute = Path(os.path.abspath(folder))
    key = f"hydra.{kind}.dir"
    for ancestor in list(absolute.parents)[:NESTING_SCAN_DEPTH]:
        for what, markers in (("run", RUN_MARKERS), ("sweep", SWEEP_MARKERS)):
            if (found := _marker(ancestor, markers)) is not None:
                raise ConfigError(
                    f"{key}={folder} is inside the {what} folder {ancestor} (it holds {found}): a {kind} "
                    f"there would mix with its records; choose a folder outside it"
                )
    if not absolute.is_dir() or _marker(absolute, RUN_MARKERS + SWEEP_MARKERS) is not None:
        return
    for below in _folders_below(absolute):
        for what, markers in (("run", RUN_MARKERS), ("sweep", SWEEP_MARKERS)):
            if (found := _marker(below, markers)) is not None:
                raise ConfigError(
                    f"{key}={folder} holds the {what} folder {below} (it has {found}): a {kind} written "
                    f"there would mix with earlier records; choose a new or empty folder"
                )


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
        folder = output_folder(base, "hydra.sweep.dir")
        check_nesting(folder, "sweep")
        check_writable(folder)
        settings = sweep_settings(base, line, swept)
        moved = move_aside(folder) if fresh else None
        grid = str(OmegaConf.select(base, "hydra.sweeper._target_", default="")).endswith(GRID_SWEEPER)
        growth = record_sweep(folder, settings, growable=grid)
        if not any(o.split("=", 1)[0] == "hydra.sweep.dir" for o in line.overrides):
            pinned.append(f"hydra.sweep.dir={folder}")
    else:
        folder = output_folder(base, "hydra.run.dir")
        check_nesting(folder, "run")
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
    check_run_mode(line, base)
    swept = swept_values(line, base) if line.multirun else {}
    configs = check_values(line, base, fixed, swept)
    check_runtime(configs, [CONF_DIR, *extra_config_dirs(line.argv)])
    return prepare_folder(line, base, swept)
