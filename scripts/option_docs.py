"""Generate the option lists of README.md from the config folder, and check every ``group=option`` the
docs name.

The README's prose is written by hand; a list that must name every option of a config group sits between
marker comments and is written by this script from the files Hydra finds in ``conf/``::

    <!-- options:data -->`breast_cancer`, `cifar10`, ...<!-- /options -->   the options of the group data
    <!-- groups:defaults -->`data/ model/ ...`<!-- /groups -->            the groups of train.yaml's defaults
    <!-- groups:added -->`cts_search/ ...`<!-- /groups -->                the other top-level groups (a preset
                                                                          or a study adds them)

``--write`` rewrites those blocks in README.md. ``--check`` rewrites nothing; it exits 1 with one line
that names each stale block and each choice of an option that does not exist in README.md, ``docs/`` or a
config file (their comments). A choice is ``group=option``, ``+group=option`` or
``group@package=option``; a sweep ``divergence=kl,rkl`` is one choice per value. Two kinds of value are
not options on purpose and pass: one the same text shows refused (``divergence=nope is not an option``)
and one the same text defines (a ``<group>/<option>.yaml`` path, or a ``name: <option>`` line of a YAML it
shows), as a recipe for adding an option does.

    python scripts/option_docs.py --write
    python scripts/option_docs.py --check
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path

from divergence_lab.config.checks import (
    CONF_DIR,
    HYDRA_GROUP_PREFIX,
    NULL_ALLOWED_GROUPS,
    chosen_groups,
    group_options,
    registered_options,
)
from divergence_lab.ground.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS_DIR = ROOT / "docs"

BLOCK = re.compile(
    r"<!-- (?P<kind>options|groups):(?P<name>[\w/]+) -->(?P<body>.*?)<!-- /(?P=kind) -->", re.S
)
DEFAULTS_GROUPS = "defaults"  # <!-- groups:defaults -->: the groups of train.yaml's defaults list
ADDED_GROUPS = "added"  # <!-- groups:added -->: the other top-level groups
# a group choice: `group=value`, `+group=value`, `group@package=value`; not a key (`method.teacher.model=`)
REFERENCE = re.compile(
    r"(?<![\w.$/@+~-])\+{0,2}(?P<group>[a-z_]+(?:/[a-z_]+)*)(?:@[\w.]+)?=(?P<value>[^\s`'\"|;\[\]{}]+)"
)
REFUSED = re.compile(r"(?P<group>[a-z_]+(?:/[a-z_]+)*)=(?P<value>\S+) is not an option")
DEFINED_FILE = re.compile(r"(?P<group>[a-z_]+(?:/[a-z_]+)*)/(?P<option>\w+)\.yaml")
DEFINED_NAME = re.compile(r"^\s*name: (?P<option>\w+)\s*$", re.M)
PLACEHOLDERS = ("<", ">", "…", "...", "*", "$", "(", "{")  # `study=<name>`, `+pld_variant=ce,kd,...`
TRAILING_PUNCTUATION = ".,:;)"


def options_line(names: Iterable[str]) -> str:
    """``names`` backticked and comma-separated, sorted: the text of an ``options:<group>`` block."""
    return ", ".join(f"`{name}`" for name in sorted(names))


def groups_line(groups: Iterable[str]) -> str:
    """``groups`` as one code span of folder names (``data/ model/``), in the given order."""
    return "`" + " ".join(f"{group}/" for group in groups) + "`"


def added_groups(options: Mapping[str, Iterable[str]], chosen: Sequence[str]) -> list[str]:
    """The top-level groups of ``options`` not in ``chosen``, sorted: groups a preset or a study adds
    (``+pld_variant=kd``). A folder inside a group (``hydra/launcher``, ``pld_variant/<pair>``) is not one."""
    return sorted(group for group in options if "/" not in group and group not in chosen)


def block_text(kind: str, name: str, options: Mapping[str, Iterable[str]], chosen: Sequence[str]) -> str:
    """What the block ``<!-- kind:name -->`` holds, generated; ConfigError for a block naming nothing."""
    if kind == "options" and name in options:
        return options_line(options[name])
    if kind == "groups" and name == DEFAULTS_GROUPS:
        return groups_line(chosen)
    if kind == "groups" and name == ADDED_GROUPS:
        return groups_line(added_groups(options, chosen))
    raise ConfigError(f"<!-- {kind}:{name} --> names no config group (or list) to generate")


def rewritten(text: str, options: Mapping[str, Iterable[str]], chosen: Sequence[str]) -> str:
    """``text`` with every marker block's content generated afresh."""

    def fill(match: re.Match[str]) -> str:
        kind, name = match["kind"], match["name"]
        return f"<!-- {kind}:{name} -->{block_text(kind, name, options, chosen)}<!-- /{kind} -->"

    return BLOCK.sub(fill, text)


def stale_blocks(text: str, options: Mapping[str, Iterable[str]], chosen: Sequence[str]) -> list[str]:
    """The blocks of ``text`` (``options:data``) whose content is not what :func:`rewritten` writes."""
    return [
        f"{m['kind']}:{m['name']}"
        for m in BLOCK.finditer(text)
        if m["body"] != block_text(m["kind"], m["name"], options, chosen)
    ]


@cache
def hydra_options(group: str) -> frozenset[str]:
    """The options of one of Hydra's own groups (``hydra/launcher``): those registered in code by Hydra and
    its plugins with the package's files."""
    return frozenset(registered_options(group, group_options([CONF_DIR]).get(group, set())))


def choices(text: str) -> list[tuple[str, str]]:
    """Every ``(group, value)`` that ``text`` chooses with ``group=value`` (one pair per value of a sweep
    ``group=a,b``), placeholders (``study=<name>``, ``...``) left out."""
    pairs = []
    for match in REFERENCE.finditer(text):
        for value in match["value"].rstrip(TRAILING_PUNCTUATION).split(","):
            if value and not any(mark in value for mark in PLACEHOLDERS):
                pairs.append((match["group"], value))
    return pairs


def unknown_choices(text: str, options: Mapping[str, Iterable[str]]) -> list[str]:
    """The ``group=value`` choices of ``text`` whose value is not an option of the group, in order of
    appearance, once each. Keys that are no group (``seed=0``) are not choices; a value that ``text``
    shows refused or defines is not reported (see the module docstring)."""
    refused = {(m["group"], m["value"]) for m in REFUSED.finditer(text)}
    defined = {m["option"] for m in DEFINED_FILE.finditer(text)} | {
        m["option"] for m in DEFINED_NAME.finditer(text)
    }
    unknown: list[str] = []
    for group, value in choices(text):
        if group.startswith(HYDRA_GROUP_PREFIX):
            known: Iterable[str] = hydra_options(group)
        elif group in options:
            known = options[group]
        else:
            continue
        if value in known or value in defined or (group, value) in refused:
            continue
        if value == "null" and group in NULL_ALLOWED_GROUPS:
            continue
        if f"{group}={value}" not in unknown:
            unknown.append(f"{group}={value}")
    return unknown


def reference_files() -> list[Path]:
    """The texts whose ``group=option`` choices are checked: README.md, every Markdown file under docs/,
    and every config file (their comments point at options: ``conf/train.yaml``'s defaults list)."""
    return [README, *sorted(DOCS_DIR.rglob("*.md")), *sorted(CONF_DIR.rglob("*.yaml"))]


def problems() -> list[str]:
    """What ``--check`` reports: ``README.md: stale <block>, ...`` for the blocks that ``--write`` would
    change, and ``<file>: <group>=<value> is not an option`` for each unknown choice of
    :func:`reference_files`."""
    options = group_options([CONF_DIR])
    stale = stale_blocks(README.read_text(), options, chosen_groups())
    found = (
        [f"{_shown(README)}: stale {', '.join(stale)} (python scripts/option_docs.py --write)"]
        if stale
        else []
    )
    for path in reference_files():
        found += [f"{_shown(path)}: {c} is not an option" for c in unknown_choices(path.read_text(), options)]
    return found


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite the generated blocks of README.md")
    mode.add_argument("--check", action="store_true", help="exit 1 naming stale blocks and unknown options")
    args = parser.parse_args(argv)
    try:
        if args.write:
            text = README.read_text()
            new = rewritten(text, group_options([CONF_DIR]), chosen_groups())
            if new != text:
                README.write_text(new)
            return 0
        found = problems()
    except ConfigError as error:
        print(f"option_docs: error: {error}", file=sys.stderr)
        return 2
    if found:
        print("; ".join(found), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
