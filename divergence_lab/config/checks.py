"""Refuse a bad configuration before any work starts, with one line that names the key and what is allowed.

Three kinds of check (the CLI runs them all before Hydra starts, see
:mod:`divergence_lab.config.preflight`; a run repeats the last two):

* :func:`check_group_choices` runs on the command line, before Hydra composes anything, so that
  ``dlab divergence=nope`` prints ``divergence=nope is not an option; choose one of: cs, fdiv, ...``
  instead of Hydra's multi-line search-path report.
* :func:`validate_settings` runs on the composed config without any deep-learning framework: types and
  ranges of values (``seed`` an integer, finite learning rates > 0, ``trainer.max_epochs`` >= 1, ...), the
  groups the method reads (``method.reads``: an override of a group it would ignore is refused, naming
  what it uses instead), ``optimized_metric`` among the method's ``val_metrics``, the checkpoint selection
  (``checkpoint_selection.tie_break``: ``first``, ``last`` or one of those ``val_metrics``), the temperature
  floor.
* :func:`validate_divergence` builds the divergence from the registry (torch): its parameters, and its
  kind against ``method.divergence_kinds``.

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

from divergence_lab.config.errors import ConfigError

CONF_DIR = Path(__file__).parents[1] / "conf"
OPTIMIZER_NAMES = ("adam", "adamw", "sgd")
SCHEDULER_NAMES = ("none", "cosine", "step")
NULL_ALLOWED_GROUPS = ("experiment", "hparams_search")
SEARCHPATH_OVERRIDE = "hydra.searchpath="
MISSING_MARKER = "???"  # OmegaConf's mandatory value
PRUNERS = ("cts", "random", "magnitude", "snip", "grasp", "synflow", "ltr")
MASK_PRUNERS = ("synflow", "ltr")  # they choose a mask, not scores
SANITY_CHECKS = ("none", "shuffle", "invert", "reinit")
DKL_FORMS = ("official_code", "paper")  # LegoGCD's dual-view term: the official code's, or Eq. 11-12
SELECTIONS = ("best", "last")  # method.checkpoint_selection: the best validation epoch, or the last epoch
TIE_POSITIONS = ("first", "last")  # checkpoint_selection.tie_break by epoch rather than by a val/ metric
READ_GROUPS = ("model", "divergence")  # the groups a method may leave unread (method.reads)
FUSED_LINEAR = ("auto", True, False)  # method.fused_linear of language-model distillation
# trainer.precision: auto (trainer=gpu) or a Lightning precision by its full name (not 32, 16, "bf16")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")


def group_options(config_dirs: Iterable[Path]) -> dict[str, set[str]]:
    """Map each config group (``data``, ``model``, ``hydra/launcher`` ...) to its available option names."""
    options: dict[str, set[str]] = {}
    for root in config_dirs:
        for path in Path(root).rglob("*.yaml"):
            group = path.parent.relative_to(root).as_posix()
            if group != ".":
                options.setdefault(group, set()).add(path.stem)
    return options


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

    Sweep values (``divergence=kl,rkl``) are checked one by one. Options that Hydra or its plugins
    register in code (``hydra/launcher=submitit_slurm``) are left to Hydra.
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
        if group not in options or group.startswith("hydra/") or override.is_delete():
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite real number: NaN and infinities are refused wherever a number is validated."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_integer_at_least(value: Any, key: str, low: int = 1) -> None:
    if not _is_int(value) or value < low:
        raise ConfigError(f"{key} must be an integer >= {low} (got {value!r})")


def check_optimizer(optimizer: Any, key: str) -> None:
    """Check ``{name, lr, weight_decay, scheduler}``: known names, ``lr > 0``, ``weight_decay >= 0``."""
    name = optimizer.get("name")
    if name not in OPTIMIZER_NAMES:
        raise ConfigError(f"{key}.name must be one of {', '.join(OPTIMIZER_NAMES)} (got {name!r})")
    lr = optimizer.get("lr")
    if not _is_number(lr) or lr <= 0:
        raise ConfigError(f"{key}.lr must be a finite number > 0 (got {lr!r})")
    weight_decay = optimizer.get("weight_decay", 0.0)
    if not _is_number(weight_decay) or weight_decay < 0:
        raise ConfigError(f"{key}.weight_decay must be a finite number >= 0 (got {weight_decay!r})")
    momentum = optimizer.get("momentum", 0.0)
    if not _is_number(momentum) or not 0.0 <= momentum < 1.0:
        raise ConfigError(f"{key}.momentum must be a number in [0, 1) (got {momentum!r})")
    scheduler = optimizer.get("scheduler", "none")
    if scheduler not in SCHEDULER_NAMES:
        raise ConfigError(f"{key}.scheduler must be one of {', '.join(SCHEDULER_NAMES)} (got {scheduler!r})")
    min_lr_factor = optimizer.get("min_lr_factor", 0.0)
    if not _is_number(min_lr_factor) or not 0.0 <= min_lr_factor <= 1.0:
        raise ConfigError(f"{key}.min_lr_factor must be a number in [0, 1] (got {min_lr_factor!r})")
    if scheduler == "step":
        _check_milestones(optimizer.get("milestones"), optimizer.get("gamma", 0.1), key)


def _check_milestones(milestones: Any, gamma: Any, key: str) -> None:
    """``scheduler: step`` needs increasing integer epochs ``milestones`` and a factor ``gamma`` in (0, 1]."""
    if not isinstance(milestones, (list, ListConfig)) or not milestones:
        raise ConfigError(
            f"{key}.milestones must be a non-empty list of epochs for scheduler=step (got {milestones!r})"
        )
    values = list(milestones)
    if not all(_is_int(m) and m >= 1 for m in values) or values != sorted(set(values)):
        raise ConfigError(f"{key}.milestones must be increasing integers >= 1 (got {values})")
    if not _is_number(gamma) or not 0.0 < gamma <= 1.0:
        raise ConfigError(f"{key}.gamma must be a number in (0, 1] (got {gamma!r})")


def _check_teacher(teacher: Any) -> None:
    if "optimizer" in teacher:
        check_optimizer(teacher.optimizer, "method.teacher.optimizer")
    if "max_epochs" in teacher:
        check_integer_at_least(teacher.max_epochs, "method.teacher.max_epochs")
    if "seed" in teacher and not _is_int(teacher.seed):
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
    if threads != "auto" and (not _is_int(threads) or threads < 1):
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
    if not _is_number(temperature) or temperature <= 0:
        raise ConfigError(f"divergence: temperature must be a number > 0 (got {temperature!r})")
    smallest = cfg.checks.min_temperature
    if temperature < smallest:
        raise ConfigError(
            f"divergence.temperature={temperature:g} is below {smallest:g}: the softened distributions "
            f"degenerate to one-hot (and the T² factor scales the term to ~0); use T >= {smallest:g}"
        )


def check_pruning(method: Any) -> None:
    """Pruning methods: a known pruner and sanity check, a density in (0, 1], an LTR schedule that ends."""
    pruner, sanity = method.get("pruner"), method.get("sanity")
    if pruner is not None and pruner not in PRUNERS:
        raise ConfigError(f"method.pruner must be one of {', '.join(PRUNERS)} (got {pruner!r})")
    if sanity is not None and sanity not in SANITY_CHECKS:
        raise ConfigError(f"method.sanity must be one of {', '.join(SANITY_CHECKS)} (got {sanity!r})")
    if sanity == "invert" and pruner in MASK_PRUNERS:
        raise ConfigError(f"method.sanity=invert needs a score-based pruner, not {pruner}")
    density = method.get("density")
    if density is not None and (not _is_number(density) or not 0.0 < density <= 1.0):
        raise ConfigError(f"method.density must be a number in (0, 1] (got {density!r})")
    ltr = method.get("ltr")
    if ltr is not None:
        fraction = ltr.get("prune_fraction")
        if not _is_number(fraction) or not 0.0 < fraction < 1.0:
            raise ConfigError(f"method.ltr.prune_fraction must be a number in (0, 1) (got {fraction!r})")
        check_integer_at_least(ltr.get("epochs_per_round"), "method.ltr.epochs_per_round")


def check_category_discovery(method: Any) -> None:
    """LegoGCD: the LER confidence threshold δ in (0, 1] and a known DKL form."""
    threshold = method.get("ler_threshold")
    if threshold is not None and (not _is_number(threshold) or not 0.0 < threshold <= 1.0):
        raise ConfigError(f"method.ler_threshold must be a number in (0, 1] (got {threshold!r})")
    form = method.get("dkl_form")
    if form is not None and form not in DKL_FORMS:
        raise ConfigError(f"method.dkl_form must be one of {', '.join(DKL_FORMS)} (got {form!r})")


def check_divergence_warmup(method: Any) -> None:
    """KD: ``method.divergence_warmup`` maps divergence names to warm-up epochs, integers >= 0."""
    for name, epochs in (method.get("divergence_warmup") or {}).items():
        if not _is_int(epochs) or epochs < 0:
            raise ConfigError(f"method.divergence_warmup.{name} must be an integer >= 0 (got {epochs!r})")


def _check_sampling(settings: Any, key: str) -> None:
    """``{temperature > 0, top_k: null or >= 1, max_new_tokens: null or >= 1}`` of generated completions."""
    temperature = settings.get("temperature")
    if not _is_number(temperature) or temperature <= 0:
        raise ConfigError(f"{key}.temperature must be a number > 0 (got {temperature!r})")
    for name in ("top_k", "max_new_tokens"):
        if settings.get(name) is not None:
            check_integer_at_least(settings.get(name), f"{key}.{name}")


def check_language_model_distillation(method: Any) -> None:
    """Language-model distillation: the on-policy fraction in [0, 1], the fused-path switch, the sampling
    of on-policy and evaluation completions, and an evaluation whose pass@k has k <= samples."""
    fraction = method.get("on_policy_fraction")
    if fraction is not None and (not _is_number(fraction) or not 0.0 <= fraction <= 1.0):
        raise ConfigError(f"method.on_policy_fraction must be a number in [0, 1] (got {fraction!r})")
    fused = method.get("fused_linear")
    if fused is not None and (not isinstance(fused, (bool, str)) or fused not in FUSED_LINEAR):
        raise ConfigError(f"method.fused_linear must be auto, true or false (got {fused!r})")
    if (generation := method.get("generation")) is not None:
        _check_sampling(generation, "method.generation")
    evaluation = method.get("evaluation")
    if evaluation is None:
        return
    _check_sampling(evaluation, "method.evaluation")
    check_integer_at_least(evaluation.get("samples"), "method.evaluation.samples")
    check_integer_at_least(evaluation.get("batch_size"), "method.evaluation.batch_size")
    for name in ("val_prompts", "test_prompts"):
        if evaluation.get(name) is not None:
            check_integer_at_least(evaluation.get(name), f"method.evaluation.{name}")
    ks, samples = evaluation.get("ks"), evaluation.samples
    if (
        not isinstance(ks, (list, ListConfig))
        or not ks
        or not all(_is_int(k) and 1 <= k <= samples for k in ks)
    ):
        raise ConfigError(
            f"method.evaluation.ks must be a non-empty list of integers in [1, samples={samples}] for "
            f"pass@k (got {ks!r})"
        )


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


def validate_settings(cfg: DictConfig, overrides: Sequence[str] = ()) -> None:
    """The checks that need no deep-learning framework (well under a second); ``overrides`` are the run's
    command-line and sweep overrides, checked against what the method reads."""
    check_no_missing_values(cfg)
    if not _is_int(cfg.seed):
        raise ConfigError(f"seed must be an integer (got {cfg.seed!r})")
    check_integer_at_least(cfg.trainer.max_epochs, "trainer.max_epochs")
    check_optimizer(cfg.method.optimizer, "method.optimizer")
    if (teacher := cfg.method.get("teacher")) is not None:
        _check_teacher(teacher)
    alpha = cfg.method.get("alpha")
    if alpha is not None and (not _is_number(alpha) or not 0.0 <= alpha <= 1.0):
        raise ConfigError(f"method.alpha must be a number in [0, 1] (got {alpha!r})")
    check_integer_at_least(cfg.data.get("batch_size"), "data.batch_size")
    check_pruning(cfg.method)
    check_category_discovery(cfg.method)
    check_divergence_warmup(cfg.method)
    check_language_model_distillation(cfg.method)
    check_method_reads(cfg, overrides)
    check_optimized_metric(cfg)
    check_checkpoint_selection(cfg)
    check_threads(cfg.get("threads", "auto"))
    check_precision(cfg.trainer)
    wait = cfg.get("stage_wait_s")
    if wait is not None and (not _is_number(wait) or wait <= 0):
        raise ConfigError(f"stage_wait_s must be a number of seconds > 0 (got {wait!r})")
    check_divergence_temperature(cfg)
    ckpt = cfg.get("ckpt_path")
    if ckpt not in (None, "auto", "fresh") and not os.path.isfile(str(ckpt)):
        raise ConfigError(
            f"ckpt_path must be null, 'auto', 'fresh' or an existing checkpoint file (got {ckpt!r})"
        )


def validate_divergence(cfg: DictConfig) -> None:
    """Build the divergence to check its parameters, and check that the method accepts its kind.

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


def validate(cfg: DictConfig, overrides: Sequence[str] = ()) -> None:
    """Check the composed config's values; raise :class:`ConfigError` naming the first bad key."""
    validate_settings(cfg, overrides)
    validate_divergence(cfg)
