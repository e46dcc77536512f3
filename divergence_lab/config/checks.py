"""Refuse a bad configuration before any work starts, with one line that names the key and what is allowed.

Five kinds of check (the CLI runs them all before Hydra starts, see
:mod:`divergence_lab.entry.preflight`; a run repeats the second and third):

* :func:`check_group_choices` runs on the command line, before Hydra composes anything, so that
  ``dlab divergence=nope`` prints ``divergence=nope is not an option; choose one of: cs, fdiv, ...``
  instead of Hydra's multi-line search-path report.
* :func:`validate_settings` runs on the composed config without any deep-learning framework: types and
  ranges of values (``seed`` an integer, finite learning rates > 0, ``trainer.max_epochs`` >= 1, ...), the
  groups the method reads (``method.reads``: an override of a group it would ignore is refused, naming
  what it uses instead), ``optimized_metric`` among the method's ``val_metrics``, the checkpoint selection
  (``checkpoint_selection.tie_break``: ``first``, ``last`` or one of those ``val_metrics``), the temperature
  floor, and the method's settings against the vocabulary its YAML declares (``method.accepts``, checked by
  :func:`divergence_lab.config.accepts.check_accepts`). No method's vocabulary is written here.
* :func:`validate_divergence` builds the divergence from the registry (torch): its parameters, and its
  kind against ``method.divergence_kinds``.
* :func:`check_method_settings` imports the method module (torch) for the rules across its keys that its
  YAML cannot declare (its ``check_settings(method_cfg)``).
* :func:`check_compatibility` (the pre-flight only) decides the declared contract from the config: what
  each data option serves (``conf/data/contracts.yml``), what each network takes
  (``conf/model/contracts.yml``) and what the method trains (``method.data_tasks``,
  ``method.model_families``); those files are not Hydra options, so nothing in them reaches a class.

All raise :class:`ConfigError`; the entry point prints its message as a single line and exits with 2.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from divergence_lab.config.accepts import check_accepts, is_finite_number, is_integer
from divergence_lab.ground.errors import ConfigError

CONF_DIR = Path(__file__).parents[1] / "conf"
OPTIMIZER_NAMES = ("adam", "adamw", "sgd")
SCHEDULER_NAMES = ("none", "cosine", "step", "linear")  # linear: per optimiser step, optional warm-up
NULL_ALLOWED_GROUPS = ("experiment", "hparams_search")
SEARCHPATH_OVERRIDE = "hydra.searchpath="
HYDRA_GROUP_PREFIX = "hydra/"  # Hydra's own groups (hydra/launcher, hydra/sweeper): options also in code
MISSING_MARKER = "???"  # OmegaConf's mandatory value
SELECTIONS = ("best", "last")  # method.checkpoint_selection: the best validation epoch, or the last epoch
TIE_POSITIONS = ("first", "last")  # checkpoint_selection.tie_break by epoch rather than by a val/ metric
READ_GROUPS = ("model", "divergence")  # the groups a method may leave unread (method.reads)
# trainer.precision: auto (trainer=gpu) or a Lightning precision by its full name (not 32, 16, "bf16")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
GRADIENT_CLIP_ALGORITHMS = ("norm", "value")
# trainer knobs where a value below the bound would quietly mean something else (a negative clip value: no
# clipping); ``-1`` is Lightning's own "no limit" for max_steps and is allowed
TRAINER_INTEGERS_AT_LEAST = {
    "devices": 1,
    "num_nodes": 1,
    "accumulate_grad_batches": 1,
    "log_every_n_steps": 1,
    "check_val_every_n_epoch": 1,
    "min_epochs": 0,
    "num_sanity_val_steps": 0,
}
TRAINER_NO_LIMIT = -1  # trainer.max_steps=-1: no step limit (Lightning's default)
TRAINER_BATCH_LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches")
TEXT_CLASSIFIER_TARGET = "divergence_lab.models.text_classifier.BertClassifier"
TEXT_CLASSIFIER_SIZES = ("layers", "hidden", "heads", "intermediate")
# the declared contracts of the data and model options (files Hydra does not compose)
DATA_CONTRACTS = Path("data") / "contracts.yml"
MODEL_CONTRACTS = Path("model") / "contracts.yml"
DATA_REFERENCE = "data."  # a declared number read from the data config: data.dim, data.base.num_classes
INPUT_DESCRIPTIONS = {  # what one example of an input kind is, in a refusal
    "tokens": "token rows (text for a sequence classifier)",
    "text": "prompt/completion text",
}
TEACHER_MODEL_CHOICE = "model@method.teacher.model"  # the teacher's model option, as Hydra names it


def group_options(config_dirs: Iterable[Path]) -> dict[str, set[str]]:
    """Map each config group (``data``, ``model``, ``hydra/launcher`` ...) to its available option names."""
    options: dict[str, set[str]] = {}
    for root in config_dirs:
        for path in Path(root).rglob("*.yaml"):
            group = path.parent.relative_to(root).as_posix()
            if group != ".":
                options.setdefault(group, set()).add(path.stem)
    return options


def chosen_groups(train_config: Path = CONF_DIR / "train.yaml") -> list[str]:
    """The config groups that ``train_config``'s defaults list chooses an option of, in its order."""
    defaults = OmegaConf.load(train_config).get("defaults", [])
    return [str(group) for entry in defaults if isinstance(entry, DictConfig) for group in entry]


def extra_config_dirs(argv: Sequence[str]) -> list[Path]:
    """The user's config folders on a command line: ``--config-dir`` / ``-cd`` and the ``file://`` entries
    of a ``hydra.searchpath=[...]`` override (both add to Hydra's config search path)."""
    dirs = []
    for i, arg in enumerate(argv):
        for flag in ("--config-dir", "-cd"):
            if arg == flag and i + 1 < len(argv):
                dirs.append(Path(argv[i + 1]))
            elif arg.startswith(flag + "="):
                dirs.append(Path(arg.split("=", 1)[1]))
        if arg.startswith(SEARCHPATH_OVERRIDE):
            entries = arg.split("=", 1)[1].strip("[]").split(",")
            dirs += [Path(e.strip().strip("'\"")[len("file://") :]) for e in entries if "file://" in e]
    return [d for d in dirs if d.is_dir()]


def check_group_choices(argv: Sequence[str]) -> None:
    """Check ``group=option`` overrides on the command line against the options that exist.

    Sweep values (``divergence=kl,rkl``) are checked one by one. The options of Hydra's own groups
    (``hydra/launcher=nope``) are those Hydra and its plugins register in code with the config files.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    if not overrides:
        return
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # malformed syntax: Hydra reports it with its own message
        return
    options = group_options([CONF_DIR, *extra_config_dirs(argv)])
    for override in parsed:
        group = override.key_or_group
        if group.startswith(HYDRA_GROUP_PREFIX) and not override.is_delete() and group.count("/") == 1:
            options[group] = registered_options(group, options.get(group, set()))
        if group not in options or override.is_delete():
            continue
        if override.is_sweep_override():
            try:
                values = list(override.sweep_string_iterator())
            except Exception:  # glob() and range sweeps: Hydra expands them
                continue
        else:
            values = [override.get_value_element_as_str()]
        for value in values:
            if value == "null" and group in NULL_ALLOWED_GROUPS:
                continue
            if value not in options[group]:
                close = difflib.get_close_matches(value, sorted(options[group]), n=1)
                hint = f" (did you mean {group}={close[0]}?)" if close else ""
                raise ConfigError(
                    f"{group}={value} is not an option; choose one of: "
                    f"{', '.join(sorted(options[group]))}{hint}"
                )


def hydra_group_options(group: str) -> list[str]:
    """The options of a config group as Hydra finds them on its search path with the package's configs:
    its own, the installed plugins' (registered in code, ``hydra/launcher=joblib``) and the package's
    files."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_module("divergence_lab.conf", version_base="1.3"):
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group))


def registered_options(group: str, files: set[str]) -> set[str]:
    """The options of a ``hydra/...`` group: those Hydra and its plugins register in code (``joblib``,
    ``submitit_slurm``, ``optuna``) with the config folders' files (``files``)."""
    return set(hydra_group_options(group)) | files


def check_integer_at_least(value: Any, key: str, low: int = 1) -> None:
    """Refuse ``value`` unless it is an integer (not a bool) of at least ``low``."""
    if not is_integer(value) or value < low:
        raise ConfigError(f"{key} must be an integer >= {low} (got {value!r})")


def _check_positive_finite(value: Any, subject: str) -> None:
    """A number > 0 that is finite: an infinite value is named as such (``must be finite``)."""
    if isinstance(value, float) and math.isinf(value):
        raise ConfigError(f"{subject} must be finite (got {value!r}); give a number > 0")
    if not is_finite_number(value) or value <= 0:
        raise ConfigError(f"{subject} must be a finite number > 0 (got {value!r})")


def check_optimizer(optimizer: Any, key: str) -> None:
    """Check ``{name, lr, weight_decay, scheduler}``: known names, ``lr > 0``, ``weight_decay >= 0``; the
    schedule's own settings (``min_lr_factor``; ``milestones``, ``gamma`` of ``step``; ``warmup_steps`` of
    ``linear``, an integer >= 0 that no other schedule reads)."""
    name = optimizer.get("name")
    if name not in OPTIMIZER_NAMES:
        raise ConfigError(f"{key}.name must be one of {', '.join(OPTIMIZER_NAMES)} (got {name!r})")
    lr = optimizer.get("lr")
    if not is_finite_number(lr) or lr <= 0:
        raise ConfigError(f"{key}.lr must be a finite number > 0 (got {lr!r})")
    weight_decay = optimizer.get("weight_decay", 0.0)
    if not is_finite_number(weight_decay) or weight_decay < 0:
        raise ConfigError(f"{key}.weight_decay must be a finite number >= 0 (got {weight_decay!r})")
    momentum = optimizer.get("momentum", 0.0)
    if not is_finite_number(momentum) or not 0.0 <= momentum < 1.0:
        raise ConfigError(f"{key}.momentum must be a number in [0, 1) (got {momentum!r})")
    scheduler = optimizer.get("scheduler", "none")
    if scheduler not in SCHEDULER_NAMES:
        raise ConfigError(f"{key}.scheduler must be one of {', '.join(SCHEDULER_NAMES)} (got {scheduler!r})")
    min_lr_factor = optimizer.get("min_lr_factor", 0.0)
    if not is_finite_number(min_lr_factor) or not 0.0 <= min_lr_factor <= 1.0:
        raise ConfigError(f"{key}.min_lr_factor must be a number in [0, 1] (got {min_lr_factor!r})")
    if scheduler == "step":
        _check_milestones(optimizer.get("milestones"), optimizer.get("gamma", 0.1), key)
    _check_warmup_steps(optimizer.get("warmup_steps"), scheduler, key)


def _check_warmup_steps(warmup_steps: Any, scheduler: Any, key: str) -> None:
    """``warmup_steps``: an integer >= 0 (null: 0); a warm-up is only part of ``scheduler: linear``."""
    if warmup_steps is None:
        return
    check_integer_at_least(warmup_steps, f"{key}.warmup_steps", 0)
    if warmup_steps > 0 and scheduler != "linear":
        raise ConfigError(
            f"{key}.warmup_steps={warmup_steps} is read only by scheduler=linear (got "
            f"scheduler={scheduler}); set it to 0 or use the linear schedule"
        )


def _check_milestones(milestones: Any, gamma: Any, key: str) -> None:
    """``scheduler: step`` needs increasing integer epochs ``milestones`` and a factor ``gamma`` in (0, 1]."""
    if not isinstance(milestones, (list, ListConfig)) or not milestones:
        raise ConfigError(
            f"{key}.milestones must be a non-empty list of epochs for scheduler=step (got {milestones!r})"
        )
    values = list(milestones)
    if not all(is_integer(m) and m >= 1 for m in values) or values != sorted(set(values)):
        raise ConfigError(f"{key}.milestones must be increasing integers >= 1 (got {values})")
    if not is_finite_number(gamma) or not 0.0 < gamma <= 1.0:
        raise ConfigError(f"{key}.gamma must be a number in (0, 1] (got {gamma!r})")


def _check_teacher(teacher: Any) -> None:
    if "optimizer" in teacher:
        check_optimizer(teacher.optimizer, "method.teacher.optimizer")
    if "max_epochs" in teacher:
        check_integer_at_least(teacher.max_epochs, "method.teacher.max_epochs")
    if "seed" in teacher and not is_integer(teacher.seed):
        raise ConfigError(f"method.teacher.seed must be an integer (got {teacher.seed!r})")
    if "batch_size" in teacher:
        check_integer_at_least(teacher.batch_size, "method.teacher.batch_size")


def override_key(override: str) -> str:
    """``divergence.temperature`` for ``+divergence.temperature=2``; ``divergence`` for ``divergence=rkl``."""
    return override.split("=", 1)[0].lstrip("+~")


def _reads_rule(method: Any, key: str) -> tuple[str, Any] | None:
    """The most specific ``method.reads`` entry that covers ``key``: (its path, its rule), or None.

    Paths are a group (``model``, ``divergence``) or a dotted key (``method.search``); a rule is true, false,
    or ``{method key: value or [values]}``: read while every named method key has (one of) the value(s).
    """
    rules = method.get("reads") or {}
    covering = [str(path) for path in rules if key == path or key.startswith(f"{path}.")]
    if not covering:
        return None
    path = max(covering, key=len)
    return path, rules[path]


def _allowed(wanted: Any) -> list[Any]:
    """A rule's value or list of values, as a list."""
    return list(wanted) if isinstance(wanted, (list, ListConfig)) else [wanted]


def _rule_holds(method: Any, rule: Any) -> bool:
    if isinstance(rule, bool):
        return rule
    return all(OmegaConf.select(method, str(key)) in _allowed(wanted) for key, wanted in rule.items())


def _condition(rule: Any) -> str:
    parts = []
    for key, wanted in rule.items():
        shown = [str(v).lower() if isinstance(v, bool) else str(v) for v in _allowed(wanted)]
        parts.append(f"method.{key} is {' or '.join(shown)}")
    return "it is read only while " + " and ".join(parts)


def reads(method: Any, key: str) -> bool:
    """Whether the method reads the group or key ``key`` (``divergence``, ``method.search.epochs``)."""
    found = _reads_rule(method, key)
    return found is None or _rule_holds(method, found[1])


def unread_override(cfg: DictConfig, override: str) -> str | None:
    """Why ``override`` would be ignored by the chosen method (one line), or None when the method reads it."""
    method = cfg.method
    key = override_key(override)
    found = _reads_rule(method, key)
    if found is None or _rule_holds(method, found[1]):
        return None
    path, rule = found
    instead = (method.get("instead") or {}).get(path)
    if instead is None:
        instead = _condition(rule) if not isinstance(rule, bool) else "its own settings"
    elif isinstance(rule, bool) or path in READ_GROUPS:
        instead = f"it uses {instead} instead"
    return f"method={method.name} does not read {path} (got {override}): {instead}; remove the override"


def check_method_reads(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Refuse an override of a group or key that the chosen method does not read (it would be ignored)."""
    for override in overrides:
        if (reason := unread_override(cfg, override)) is not None:
            raise ConfigError(reason)


def check_optimized_metric(cfg: DictConfig) -> None:
    metric = str(cfg.get("optimized_metric", ""))
    if not metric.startswith("val/"):
        raise ConfigError(
            f"optimized_metric must be a validation metric (val/...): sweepers must never select on test "
            f"data (got {metric!r})"
        )
    logged = list(cfg.method.get("val_metrics", ["val/acc"]))
    if metric not in logged:
        hint = difflib.get_close_matches(metric, logged, n=1)
        did_you_mean = f"did you mean {hint[0]}? " if hint else ""
        raise ConfigError(
            f"optimized_metric={metric} is not logged by method={cfg.method.name}; {did_you_mean}"
            f"choose one of: {', '.join(logged)}"
        )


def check_checkpoint_selection(cfg: DictConfig) -> None:
    """``method.checkpoint_selection`` is best or last; where it is best, ``checkpoint_selection.tie_break``
    is ``first``, ``last`` or a validation metric the method logs (its ``val_metrics``)."""
    selection = cfg.method.get("checkpoint_selection", "best")
    if selection not in SELECTIONS:
        raise ConfigError(
            f"method.checkpoint_selection must be one of {', '.join(SELECTIONS)} (got {selection!r})"
        )
    tie_break = OmegaConf.select(cfg, "checkpoint_selection.tie_break")
    if selection == "last" or tie_break in TIE_POSITIONS:
        return
    logged = list(cfg.method.get("val_metrics", ["val/acc"]))
    if tie_break not in logged:
        raise ConfigError(
            f"checkpoint_selection.tie_break={tie_break} is not logged by method={cfg.method.name}; "
            f"choose {', '.join(TIE_POSITIONS)} (epoch) or one of: {', '.join(logged)}"
        )


def check_threads(threads: Any) -> None:
    if threads != "auto" and (not is_integer(threads) or threads < 1):
        raise ConfigError(f"threads must be 'auto' or an integer >= 1 (got {threads!r})")


def check_precision(trainer: Any) -> None:
    """``trainer.precision``, where set: ``auto`` (resolved when the run starts, see
    :func:`divergence_lab.run.pipeline.resolve_precision`) or one of Lightning's precisions, by its full name;
    fp16 autocast on the CPU is refused (Lightning would quietly use bf16-mixed instead)."""
    precision = trainer.get("precision")
    if precision is None:
        return
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    if precision == "16-mixed" and trainer.get("accelerator") == "cpu":
        raise ConfigError(
            "trainer.precision=16-mixed needs a GPU (fp16 autocast runs on CUDA only); on the CPU use "
            "bf16-mixed or 32-true"
        )


def check_divergence_temperature(cfg: DictConfig) -> None:
    """A temperature so small that logits / T overflow and the T² factor erases the term is refused."""
    temperature = cfg.divergence.get("temperature", 1.0)
    _check_positive_finite(temperature, "divergence: temperature")
    smallest = cfg.checks.min_temperature
    if temperature < smallest:
        raise ConfigError(
            f"divergence.temperature={temperature:g} is below {smallest:g}: the softened distributions "
            f"degenerate to one-hot (and the T² factor scales the term to ~0); use T >= {smallest:g}"
        )


def check_trainer(trainer: Any) -> None:
    """The Lightning knobs where a value out of range would be taken quietly: a gradient clip value that is
    null or >= 0 (a negative one clips nothing), a known clip algorithm, counts >= their bound, a
    ``max_steps`` of -1 (no limit) or >= 1, and batch limits that are a fraction in (0, 1] or a count >= 1."""
    clip = trainer.get("gradient_clip_val")
    if clip is not None and (not is_finite_number(clip) or clip < 0):
        raise ConfigError(
            f"trainer.gradient_clip_val must be null (no clipping) or a finite number >= 0 (got {clip!r}); "
            "a negative value would clip nothing"
        )
    algorithm = trainer.get("gradient_clip_algorithm")
    if algorithm is not None and algorithm not in GRADIENT_CLIP_ALGORITHMS:
        raise ConfigError(
            f"trainer.gradient_clip_algorithm must be one of {', '.join(GRADIENT_CLIP_ALGORITHMS)} "
            f"(got {algorithm!r})"
        )
    for key, low in TRAINER_INTEGERS_AT_LEAST.items():
        if trainer.get(key) is not None:
            check_integer_at_least(trainer.get(key), f"trainer.{key}", low)
    steps = trainer.get("max_steps")
    if steps is not None and steps != TRAINER_NO_LIMIT:
        check_integer_at_least(steps, "trainer.max_steps (or -1: no limit)")
    for key in TRAINER_BATCH_LIMITS:
        limit = trainer.get(key)
        if limit is None:
            continue
        if not (is_integer(limit) and limit >= 1) and not (
            isinstance(limit, float) and math.isfinite(limit) and 0.0 < limit <= 1.0
        ):
            raise ConfigError(
                f"trainer.{key} must be a fraction in (0, 1] or a number of batches >= 1 (got {limit!r})"
            )


def check_text_classifier(node: Any, key: str) -> None:
    """A BERT classifier built from sizes (at ``key``): integer sizes >= 1, a width that the heads divide,
    a dropout in [0, 1) (what its constructor refuses only once the data's tokenizer is built)."""
    if not isinstance(node, DictConfig) or node.get("_target_") != TEXT_CLASSIFIER_TARGET:
        return
    for size in TEXT_CLASSIFIER_SIZES:
        if size in node:
            check_integer_at_least(node.get(size), f"{key}.{size}")
    hidden, heads = node.get("hidden"), node.get("heads")
    if is_integer(hidden) and is_integer(heads) and hidden % heads:
        raise ConfigError(f"{key}.hidden={hidden} must be a multiple of {key}.heads={heads}")
    dropout = node.get("dropout", 0.0)
    if not is_finite_number(dropout) or not 0.0 <= dropout < 1.0:
        raise ConfigError(f"{key}.dropout must be a number in [0, 1) (got {dropout!r})")


def _missing_paths(node: Any, prefix: str) -> Iterable[str]:
    """The dotted keys of a plain config tree whose value is the mandatory marker ``???``."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        path = f"{prefix}.{key}" if prefix else str(key)
        if value == MISSING_MARKER:
            yield path
        else:
            yield from _missing_paths(value, path)


def check_no_missing_values(cfg: DictConfig) -> None:
    """Every mandatory value (``???`` in a preset: a path only the user knows) is set."""
    plain = OmegaConf.to_container(cfg, resolve=False)  # "???" stays a string; interpolations unresolved
    plain.pop("hydra", None)  # Hydra's own node: its run-time values are not known yet
    missing = list(_missing_paths(plain, ""))
    missing.sort()
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigError(
            f"{', '.join(missing)} {verb} required (??? in the config) and not set; "
            f"add {' '.join(f'{key}=<value>' for key in missing)} to the command line"
        )


def check_validation_split(cfg: DictConfig) -> None:
    """Data that hold out no validation images (``data.val_fraction: 0``; GCD data validate on their
    unlabelled images instead) leave nothing to select an epoch or tune on: the run must test its last epoch
    (``protocol=full_train_last_epoch``); an Optuna sweep of them is refused by the sweep checks."""
    if cfg.data.get("val_fraction") != 0:
        return
    if cfg.method.get("checkpoint_selection", "best") != "last":
        raise ConfigError(
            "data.val_fraction=0 holds out no validation images to select the tested epoch: choose "
            "protocol=full_train_last_epoch (train on every training image, test the last epoch) or a "
            "data.val_fraction > 0"
        )


def validate_settings(cfg: DictConfig, overrides: Sequence[str] = ()) -> None:
    """The checks that need no deep-learning framework (well under a second); ``overrides`` are the run's
    command-line and sweep overrides, checked against what the method reads."""
    check_no_missing_values(cfg)
    if not is_integer(cfg.seed):
        raise ConfigError(f"seed must be an integer (got {cfg.seed!r})")
    check_integer_at_least(cfg.trainer.max_epochs, "trainer.max_epochs")
    check_optimizer(cfg.method.optimizer, "method.optimizer")
    if (teacher := cfg.method.get("teacher")) is not None:
        _check_teacher(teacher)
    check_integer_at_least(cfg.data.get("batch_size"), "data.batch_size")
    if cfg.data.get("eval_batch_size") is not None:
        check_integer_at_least(cfg.data.get("eval_batch_size"), "data.eval_batch_size")
    for key in ("model", "method.teacher.model"):
        check_text_classifier(OmegaConf.select(cfg, key), key)
    check_method_reads(cfg, overrides)
    check_accepts(cfg.method, lambda key: reads(cfg.method, f"method.{key}"))
    check_optimized_metric(cfg)
    check_checkpoint_selection(cfg)
    check_validation_split(cfg)
    check_threads(cfg.get("threads", "auto"))
    check_precision(cfg.trainer)
    check_trainer(cfg.trainer)
    wait = cfg.get("stage_wait_s")
    if wait is not None and (not is_finite_number(wait) or wait <= 0):
        raise ConfigError(f"stage_wait_s must be a number of seconds > 0 (got {wait!r})")
    check_divergence_temperature(cfg)
    ckpt = cfg.get("ckpt_path")
    if ckpt not in (None, "auto", "fresh") and not os.path.isfile(str(ckpt)):
        raise ConfigError(
            f"ckpt_path must be null, 'auto', 'fresh' or an existing checkpoint file (got {ckpt!r})"
        )


def validate_divergence(cfg: DictConfig) -> None:
    """Build the divergence to check its parameters, and check that the method accepts its kind and, where
    its ``divergence_names`` lists the members it takes (``divergence_names_about``: why), its name.

    Imports the registry (and with it torch), so it runs after :func:`validate_settings`.
    """
    from divergence_lab import divergences

    if not reads(cfg.method, "divergence"):
        return
    try:
        divergence = divergences.build(**cfg.divergence)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"divergence: {error}") from None
    kinds = list(cfg.method.get("divergence_kinds", ["pointwise"]))
    if divergence.kind not in kinds:
        raise ConfigError(
            f"divergence={cfg.divergence.name} is a {divergence.kind} member; method={cfg.method.name} "
            f"takes {' or '.join(kinds)} members"
            + (" (the ranking loss is its own method: method=pld)" if divergence.kind == "ranking" else "")
        )
    names = cfg.method.get("divergence_names")
    if names is not None and cfg.divergence.name not in names:
        about = cfg.method.get("divergence_names_about")
        raise ConfigError(
            f"divergence={cfg.divergence.name}: method={cfg.method.name} takes {', '.join(names)}"
            + (f" ({about})" if about else "")
        )


def check_method_settings(cfg: DictConfig) -> None:
    """The rules across keys that a method module keeps beside its builder: ``check_settings(method_cfg)``
    in the module that ``method.builder`` names, when it defines one (a pruner and the sanity check it
    allows). Imports that module (and with it torch), so it runs after :func:`validate_settings`."""
    import importlib

    try:
        module = importlib.import_module(str(cfg.method.builder).rsplit(".", 1)[0])
    except ModuleNotFoundError:  # a builder that is not importable: building the method names it
        return
    check = getattr(module, "check_settings", None)
    if check is not None:
        check(cfg.method)


def validate(cfg: DictConfig, overrides: Sequence[str] = ()) -> None:
    """Check the composed config's values; raise :class:`ConfigError` naming the first bad key."""
    validate_settings(cfg, overrides)
    validate_divergence(cfg)
    check_method_settings(cfg)


def load_contracts(relative: Path, config_dirs: Iterable[Path] = (CONF_DIR,)) -> dict[str, dict[str, Any]]:
    """``{option: its declaration}`` from ``<config dir>/<relative>`` of each config folder (a later folder's
    entry replaces an earlier one of the same name); folders without the file add nothing."""
    contracts: dict[str, dict[str, Any]] = {}
    for root in config_dirs:
        path = Path(root) / relative
        if path.is_file():
            loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
            contracts.update({str(name): dict(entry) for name, entry in (loaded or {}).items()})
    return contracts


def _holds(entry: dict[str, Any], node: Any) -> bool:
    """Whether the entry's ``when`` (``{key: value}`` of ``node``) holds."""
    return all(OmegaConf.select(node, str(key)) == value for key, value in (entry.get("when") or {}).items())


def find_contract(
    contracts: dict[str, dict[str, Any]], choice: str | None, node: Any
) -> tuple[str, dict[str, Any]] | None:
    """The declaration that describes ``node`` (a ``data`` or ``model`` config): the chosen option's while
    it declares the node's ``_target_``, else an option of that ``_target_`` whose ``when`` holds (a
    conditional one first); None when no option declares that class (a user's own network: unchecked)."""
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if choice in contracts and contracts[choice].get("target") == target:
        return choice, contracts[choice]
    same = [(name, entry) for name, entry in contracts.items() if entry.get("target") == target]
    same.sort(key=lambda item: "when" not in item[1])
    for name, entry in same:
        if _holds(entry, node):
            return name, entry
    return None


def _declared_number(value: Any, data_cfg: Any) -> int | None:
    """A declared count: the number itself, or the data config's value of ``data.<key>``; None if unknown."""
    if isinstance(value, str) and value.startswith(DATA_REFERENCE):
        value = OmegaConf.select(data_cfg, value[len(DATA_REFERENCE) :])
    return value if is_integer(value) else None


class DataServes:
    """What a data config serves, from its declaration: the task, the input kind, the shape of one example
    where the config decides it (``(C, H, W)`` images, ``(F,)`` vectors), the number of classes, and
    whether setting the module up is cheap (embedded or generated data)."""

    def __init__(self, name: str, entry: dict[str, Any], data_cfg: Any) -> None:
        self.name = name
        self.task = str(entry.get("task"))
        self.input_kind = str(entry.get("input_kind"))
        numbers = {
            key: _declared_number(entry.get(key), data_cfg) if _holds(entry, data_cfg) else None
            for key in ("classes", "channels", "size", "features")
        }
        self.classes = numbers["classes"]
        self.cheap_setup = bool(entry.get("cheap_setup")) and _holds(entry, data_cfg)
        self.shape: tuple[int, ...] | None = None
        channels, size, features = numbers["channels"], numbers["size"], numbers["features"]
        flattened = bool(entry.get("flatten_key")) and data_cfg.get(entry.get("flatten_key")) is True
        if self.input_kind == "image" and flattened:
            self.input_kind = "vector"
            self.shape = (channels * size * size,) if channels and size else None
        elif self.input_kind == "image" and channels and size:
            self.shape = (channels, size, size)
        elif self.input_kind == "vector" and features:
            self.shape = (features,)

    def describe(self) -> str:
        """``1x8x8 images``, ``vectors of 13 features``, ``token rows`` ...: what one example is."""
        if self.input_kind == "image":
            return f"{'x'.join(map(str, self.shape))} images" if self.shape else "images"
        if self.input_kind == "vector":
            return f"vectors of {self.shape[0]} features" if self.shape else "feature vectors"
        return INPUT_DESCRIPTIONS.get(self.input_kind, self.input_kind)


def model_refusal(model: dict[str, Any], served: DataServes) -> str | None:
    """Why a model declaration does not take what ``served`` serves (a phrase), or None when it does."""
    kinds = list(model.get("input_kinds") or [])
    if served.input_kind not in kinds:
        return f"takes {' or '.join(kinds)} input"
    if served.input_kind == "image" and served.shape and served.shape[1] < model.get("min_size", 0):
        return f"needs images of at least {model['min_size']}x{model['min_size']} pixels"
    if served.input_kind == "vector" and served.shape and model.get("square_vectors"):
        side = round(math.sqrt(served.shape[0]))
        if side * side != served.shape[0]:
            return "takes vectors only of a square size (read as one-channel images)"
    return None


def _choices(cfg: DictConfig) -> dict[str, Any]:
    choices = OmegaConf.select(cfg, "hydra.runtime.choices")
    return dict(choices) if choices is not None else {}


def _listed(names: Iterable[str]) -> str:
    names = sorted(names)
    return ", ".join(names) if names else "none declared"


def check_compatibility(cfg: DictConfig, config_dirs: Sequence[Path] = (CONF_DIR,)) -> None:
    """The declared contract, decided from the config before any stage runs: the data's task is one the
    method trains on (``method.data_tasks``), each network it reads (``model`` and the teacher's) is of a
    family it trains (``method.model_families``) and takes what the data serves (``input_kinds``,
    ``min_size``, ``square_vectors``); each refusal names both choices and the compatible options."""
    data_contracts = load_contracts(DATA_CONTRACTS, config_dirs)
    model_contracts = load_contracts(MODEL_CONTRACTS, config_dirs)
    choices = _choices(cfg)
    method = cfg.method
    found = find_contract(data_contracts, choices.get("data"), cfg.data)
    served = DataServes(found[0], found[1], cfg.data) if found else None
    tasks = list(method.get("data_tasks") or [])
    if served is not None and tasks and served.task not in tasks:
        fitting = [name for name, entry in data_contracts.items() if entry.get("task") in tasks]
        raise ConfigError(
            f"method={method.name} trains on {' or '.join(tasks)} data; data={served.name} serves "
            f"{served.task} data: choose data={_listed(fitting)}"
        )
    if served is not None:
        check_declared_data(cfg.data, served)
    families = list(method.get("model_families") or [])
    slots = [("model", cfg.get("model"))] if reads(method, "model") else []
    if isinstance(method.get("teacher"), DictConfig) and "model" in method.teacher:
        slots.append((TEACHER_MODEL_CHOICE, method.teacher.model))
    for slot, node in slots:
        declared = find_contract(model_contracts, choices.get(slot), node)
        if declared is None:
            continue
        name, model = declared
        fitting = [
            other
            for other, entry in model_contracts.items()
            if (not families or entry.get("family") in families)
            and (served is None or model_refusal(entry, served) is None)
        ]
        for_data = f" for data={served.name}" if served is not None else ""
        if families and model.get("family") not in families:
            raise ConfigError(
                f"{slot}={name} is a {model.get('family')}; method={method.name} trains a "
                f"{' or '.join(families)}: choose {slot}={_listed(fitting)}{for_data}"
            )
        reason = model_refusal(model, served) if served is not None else None
        if reason is not None:
            raise ConfigError(
                f"{slot}={name} {reason}, but data={served.name} serves {served.describe()}: choose "
                f"{slot}={_listed(fitting)}{for_data}"
            )


def check_declared_data(data_cfg: Any, served: DataServes) -> None:
    """Data values that only the data module refused once it had loaded the data, decided from the declared
    number of classes and the config: the known classes of a GCD split (a split without validation images:
    :func:`check_validation_split`)."""
    num_known = data_cfg.get("num_known")
    if (
        num_known is not None
        and served.classes is not None
        and not (is_integer(num_known) and 0 < num_known < served.classes)
    ):
        raise ConfigError(
            f"data.num_known must be in [1, {served.classes - 1}] for the {served.classes} classes of "
            f"data={served.name} (got {num_known!r})"
        )
