"""Check a method's settings against the vocabulary it declares in its YAML (``accepts:``), without torch.

Each ``conf/method/<name>.yaml`` says, beside its settings, what each of them accepts; :func:`check_accepts`
reads that block from the composed ``method`` config and refuses the first value outside it in one line,
before any deep-learning framework loads. A new method therefore adds no code here. A rule across several
keys (one key's choices depending on another's value) is not declared: the method module keeps it as its
``check_settings(method_cfg)``. The block never changes a result (the fingerprints ignore ``method.accepts``).

The block maps a dotted key below ``method`` to its rule; a YAML that inherits another (``defaults: [kd]``)
inherits its block, and adds to it::

    accepts:
      pruner: {choices: [random, magnitude, snip]}
      fused_linear: {choices: [auto, true, false]}
      density: {type: number, gt: 0, le: 1}
      rewind_epochs: {type: integer, ge: 0}
      use_ler: {type: boolean}
      eval_every_steps: {type: integer, ge: 1, nullable: true}
      backbone.hidden: {type: list, min_length: 1, items: {type: integer, ge: 1}}
      divergence_warmup: {type: mapping, values: {type: integer, ge: 0}, nullable: true}
      teacher_temperature:
        type: list
        about: start, end, warm-up epochs
        items: [{type: number, gt: 0}, {type: number, gt: 0}, {type: integer, ge: 0}]

A rule has a ``type`` or ``choices`` (or both), and may add:

* ``type``: ``boolean``, ``integer`` (never a bool), ``number`` (an integer or a float, always finite: NaN
  and infinities are refused), ``string``, ``list`` or ``mapping``;
* ``choices``: the values accepted, compared with their type (``true`` is not ``1``);
* ``ge``, ``gt``, ``le``, ``lt``: bounds of an integer or a number (>=, >, <=, <; ``gt: 0, le: 1`` is
  (0, 1]);
* ``nullable: true``: null is accepted too (by default it is refused);
* ``length``, ``min_length``: a list of exactly, or at least, this many items;
* ``items``: one rule for every item of a list, or a list of rules, one per position (this fixes the
  length);
* ``values``: the rule for every value of a mapping (its keys are free);
* ``about``: a few words on what the value is, added to the refusal.

A refusal names the key, what it accepts and the value: ``method.density must be a number in (0, 1] (got
0)``, ``method.pruner must be one of random, magnitude, snip (got 'best')``, ``method.teacher_temperature[2]
must be an integer >= 0 (got 2.5)``. A key the method does not read (its ``reads:`` block, passed in as
``is_read``) is not checked: its value is ignored. A malformed block (an unknown field, a bound on a string,
a declared key the method does not have) is refused in one line naming the rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from divergence_lab.ground.errors import ConfigError

ACCEPTS_KEY = "accepts"
MALFORMED_PREFIX = "method.accepts."  # how a refusal of the block itself starts
TYPES = ("boolean", "integer", "number", "string", "list", "mapping")
LOWER_BOUNDS = {"ge": (">=", "["), "gt": (">", "(")}  # field: (its operator, its interval bracket)
UPPER_BOUNDS = {"le": ("<=", "]"), "lt": ("<", ")")}
BOUNDED_TYPES = ("integer", "number")
FIELDS = (
    "type",
    "choices",
    *LOWER_BOUNDS,
    *UPPER_BOUNDS,
    "nullable",
    "length",
    "min_length",
    "items",
    "values",
    "about",
)
SINGULAR = {
    "boolean": "true or false",
    "integer": "an integer",
    "number": "a finite number",
    "string": "a string",
    "mapping": "a mapping",
}
PLURAL = {
    "boolean": "booleans",
    "integer": "integers",
    "number": "finite numbers",
    "string": "strings",
    "mapping": "mappings",
}


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, ListConfig))


def _is_mapping(value: Any) -> bool:
    return isinstance(value, (Mapping, DictConfig))


def is_integer(value: Any) -> bool:
    """An integer, never a bool (YAML's ``true`` is not 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A finite real number, never a bool: NaN and infinities are refused wherever a number is checked."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _has_type(value: Any, kind: str) -> bool:
    """Whether ``value`` is of the declared ``kind`` (a number is finite; an integer is never a bool)."""
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return is_integer(value)
    if kind == "number":
        return is_finite_number(value)
    if kind == "string":
        return isinstance(value, str)
    return _is_list(value) if kind == "list" else _is_mapping(value)


def _same(choice: Any, value: Any) -> bool:
    """``value`` is ``choice``, compared with its type: a bool matches only a bool."""
    return isinstance(choice, bool) == isinstance(value, bool) and choice == value


def _shown(value: Any) -> str:
    """A choice as YAML writes it: ``true``, ``mean``, ``0.5``."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _number(bound: float) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


# --- a rule in words -----------------------------------------------------------------------------------


def _bounds(rule: Mapping[str, Any]) -> str:
    """`` >= 1``, `` > 0``, `` in (0, 1]``, or nothing."""
    lower = next((field for field in LOWER_BOUNDS if field in rule), None)
    upper = next((field for field in UPPER_BOUNDS if field in rule), None)
    if lower and upper:
        opening, closing = LOWER_BOUNDS[lower][1], UPPER_BOUNDS[upper][1]
        return f" in {opening}{_number(rule[lower])}, {_number(rule[upper])}{closing}"
    if lower or upper:
        operator = {**LOWER_BOUNDS, **UPPER_BOUNDS}[lower or upper][0]
        return f" {operator} {_number(rule[lower or upper])}"
    return ""


def _items_count(count: int) -> str:
    return f"{count} item" if count == 1 else f"{count} items"


def _list_words(rule: Mapping[str, Any], plural: bool) -> str:
    """``a non-empty list of integers >= 1``, ``a list of 3 items``, ``lists``."""
    items = rule.get("items")
    count = len(items) if _is_list(items) else rule.get("length")
    each = describe(items, plural=True) if items is not None and not _is_list(items) else None
    head, least = ("lists", "non-empty lists") if plural else ("a list", "a non-empty list")
    if count is not None:
        return f"{head} of {count} {each}" if each else f"{head} of {_items_count(count)}"
    least_items = rule.get("min_length", 0)
    if least_items > 1:
        return f"{head} of at least {least_items} {each or 'items'}"
    words = least if least_items == 1 else head
    return f"{words} of {each}" if each else words


def describe(rule: Mapping[str, Any], plural: bool = False) -> str:
    """What ``rule`` accepts, in the words of a refusal: ``a number in (0, 1]``, ``an integer >= 1 or
    null``, ``one of mean, sum``, ``a non-empty list of integers >= 1`` (``plural``: ``integers >= 1``)."""
    if "choices" in rule:
        shown = [_shown(choice) for choice in rule["choices"]] + (["null"] if rule.get("nullable") else [])
        return ("values among " if plural else "one of ") + ", ".join(shown)
    kind = rule["type"]
    if kind == "list":
        words = _list_words(rule, plural)
    elif kind == "mapping" and rule.get("values") is not None:
        noun = PLURAL[kind] if plural else SINGULAR[kind]
        words = f"{noun} whose values are {describe(rule['values'], plural=True)}"
    else:
        bounds = _bounds(rule) if kind in BOUNDED_TYPES else ""
        if kind == "number" and bounds.startswith(" in "):  # an interval: finite by its two ends
            words = ("numbers" if plural else "a number") + bounds
        else:
            words = (PLURAL[kind] if plural else SINGULAR[kind]) + bounds
    return f"{words} or null" if rule.get("nullable") else words


# --- checking a value ----------------------------------------------------------------------------------


def _within(rule: Mapping[str, Any], value: float) -> bool:
    return (
        ("ge" not in rule or value >= rule["ge"])
        and ("gt" not in rule or value > rule["gt"])
        and ("le" not in rule or value <= rule["le"])
        and ("lt" not in rule or value < rule["lt"])
    )


def _refusal(rule: Mapping[str, Any], value: Any, key: str) -> str:
    about = f": {rule['about']}" if rule.get("about") else ""
    return f"{key} must be {describe(rule)}{about} (got {value!r})"


def _list_violation(rule: Mapping[str, Any], value: Any, key: str) -> str | None:
    items = rule.get("items")
    count = len(items) if _is_list(items) else rule.get("length")
    if (count is not None and len(value) != count) or len(value) < rule.get("min_length", 0):
        return _refusal(rule, value, key)
    if _is_list(items):  # one rule per position (the length is checked): name the position
        for position, (item_rule, item) in enumerate(zip(items, value, strict=True)):
            if (found := violation(item_rule, item, f"{key}[{position}]")) is not None:
                return found
    elif items is not None and any(violation(items, item, key) is not None for item in value):
        return _refusal(rule, value, key)
    return None


def violation(rule: Mapping[str, Any], value: Any, key: str) -> str | None:
    """Why ``value`` (the setting ``key``) breaks ``rule``, as one line; None when it keeps it."""
    if value is None:
        return None if rule.get("nullable") else _refusal(rule, value, key)
    if "choices" in rule and not any(_same(choice, value) for choice in rule["choices"]):
        return _refusal(rule, value, key)
    kind = rule.get("type")
    if kind is None:
        return None
    if not _has_type(value, kind) or (kind in BOUNDED_TYPES and not _within(rule, value)):
        return _refusal(rule, value, key)
    if kind == "list":
        return _list_violation(rule, value, key)
    if kind == "mapping" and rule.get("values") is not None:
        for name, item in value.items():
            if (found := violation(rule["values"], item, f"{key}.{name}")) is not None:
                return found
    return None


# --- checking the block itself -------------------------------------------------------------------------


def _choices_problem(rule: Mapping[str, Any], kind: str | None) -> str | None:
    choices = rule["choices"]
    if not _is_list(choices) or not choices:
        return f"choices must be a non-empty list of values (got {choices!r})"
    for choice in choices:
        if choice is None or _is_list(choice) or _is_mapping(choice):
            return f"choices must be plain values, not {choice!r} (for null write nullable: true)"
        if kind is not None and not _has_type(choice, kind):
            return f"the choice {choice!r} is not of type {kind}"
    return None


def _bounds_problem(rule: Mapping[str, Any], kind: str | None) -> str | None:
    given = [field for field in (*LOWER_BOUNDS, *UPPER_BOUNDS) if field in rule]
    if not given:
        return None
    if kind not in BOUNDED_TYPES:
        return f"{given[0]} bounds an integer or a number, not type {kind}"
    if all(field in rule for field in LOWER_BOUNDS) or all(field in rule for field in UPPER_BOUNDS):
        return "give one lower bound (ge or gt) and one upper bound (le or lt)"
    for field in given:
        if not is_finite_number(rule[field]):
            return f"{field} must be a finite number (got {rule[field]!r})"
    return None


def _container_problem(rule: Mapping[str, Any], kind: str | None, where: str) -> str | None:
    """``length``, ``min_length``, ``items`` (lists) and ``values`` (mappings), the nested rules included."""
    for field in ("length", "min_length"):
        if field in rule:
            if kind != "list":
                return f"{field} is the length of a list, not of type {kind}"
            length = rule[field]
            if not isinstance(length, int) or isinstance(length, bool) or length < 0:
                return f"{field} must be an integer >= 0 (got {length!r})"
    if "items" in rule:
        items = rule["items"]
        if kind != "list":
            return f"items are those of a list, not of type {kind}"
        if _is_list(items):
            if not items:
                return "items must be a rule, or a non-empty list of rules (one per position)"
            if "length" in rule or "min_length" in rule:
                return "items given by position fix the length: drop length and min_length"
            nested = [(item, f"{where}.items[{i}]") for i, item in enumerate(items)]
        else:
            nested = [(items, f"{where}.items")]
        for item, place in nested:
            if (problem := malformed(item, place)) is not None:
                return problem
    if "values" in rule:
        if kind != "mapping":
            return f"values are those of a mapping, not of type {kind}"
        return malformed(rule["values"], f"{where}.values")
    return None


def _rule_problem(rule: Any, where: str) -> str | None:
    if not _is_mapping(rule):
        return f"a rule is a mapping of {', '.join(FIELDS)} (got {rule!r})"
    unknown = [str(field) for field in rule if field not in FIELDS]
    if unknown:
        return f"unknown field {unknown[0]!r}; a rule takes {', '.join(FIELDS)}"
    kind = rule.get("type")
    if kind is not None and kind not in TYPES:
        return f"type must be one of {', '.join(TYPES)} (got {kind!r})"
    if kind is None and "choices" not in rule:
        return "a rule needs a type or choices"
    if "nullable" in rule and not isinstance(rule["nullable"], bool):
        return f"nullable must be true or false (got {rule['nullable']!r})"
    if "about" in rule and not (isinstance(rule["about"], str) and rule["about"].strip()):
        return f"about must be a few words (got {rule['about']!r})"
    problem = _choices_problem(rule, kind) if "choices" in rule else None
    return problem or _bounds_problem(rule, kind) or _container_problem(rule, kind, where)


def malformed(rule: Any, where: str) -> str | None:
    """Why the rule declared at ``method.accepts.<where>`` is malformed, as one line naming the rule (a
    nested one, ``density.items[0]``, by its place); None when it is well-formed."""
    problem = _rule_problem(rule, where)
    if problem is None or problem.startswith(MALFORMED_PREFIX):  # a nested rule's line, already whole
        return problem
    return f"{MALFORMED_PREFIX}{where} is malformed: {problem}"


_ABSENT = object()


def _lookup(node: Any, path: str) -> Any:
    """The value at the dotted ``path`` below ``node``; ``_ABSENT`` when a key on the way is missing."""
    for part in path.split("."):
        if not _is_mapping(node) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def declared_rules(method: Any) -> dict[str, Any]:
    """The method's ``accepts`` block as plain ``{dotted key: rule}``, each rule checked for its form;
    ``{}`` when the method declares none. A malformed block is refused in one line."""
    block = method.get(ACCEPTS_KEY) if _is_mapping(method) else None
    if block is None:
        return {}
    if not _is_mapping(block):
        raise ConfigError(f"method.accepts must map settings of the method to rules (got {block!r})")
    rules = OmegaConf.to_container(block, resolve=True) if isinstance(block, DictConfig) else dict(block)
    name = method.get("name")
    for key, rule in rules.items():
        if (problem := malformed(rule, str(key))) is not None:
            raise ConfigError(problem)
        if _lookup(method, str(key)) is _ABSENT:
            raise ConfigError(f"method.accepts.{key} names no setting of method={name}; check its spelling")
    return rules


def check_accepts(method: Any, is_read: Callable[[str], bool] = lambda key: True) -> None:
    """Refuse, in one line, the first setting of ``method`` (the composed ``method`` config) outside the
    rule its ``accepts`` block declares for it, and a malformed block. ``is_read(key)`` (a dotted key below
    ``method``) says whether the method reads that setting under the current values; one it does not read
    is not checked."""
    for key, rule in declared_rules(method).items():
        if not is_read(key):
            continue
        if (problem := violation(rule, _lookup(method, key), f"method.{key}")) is not None:
            raise ConfigError(problem)
