"""``report.html``: the report as one self-contained page to open offline, mail or attach.

The tables are those of ``report.md`` (:func:`~divergence_lab.report.tables.main_rows`,
:func:`~divergence_lab.report.tables.comparison_rows`, :func:`~divergence_lab.report.tables.notes`,
:func:`~divergence_lab.report.tables.seed_rows`), so a column added there appears here too. Every column
sorts on a click (numbers by value, text after them; a small inline script); hovering over a value shows its
per-seed values; the best mean is bold and a significant difference carries a superscript ``*``
(:mod:`divergence_lab.report.emphasis`). The figures (every ``report*.png`` of the sweep folder) are
embedded as base64 images and the provenance closes the page. Nothing is fetched from elsewhere, and every
text is HTML-escaped (labels come from user configs).
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, StrictUndefined
from markupsafe import Markup, escape

from divergence_lab.report.collect import SweepReport
from divergence_lab.report.comparison import Baseline, GroupRow, MetricComparison
from divergence_lab.report.emphasis import (
    SIGNIFICANCE_MARK,
    is_significant,
    metric_column,
    rows_by_label,
    seed_values,
    significance_note,
)
from divergence_lab.report.metric_info import axis_label
from divergence_lab.report.provenance import Provenance
from divergence_lab.report.tables import (
    BEST_MARK,
    FIGURES,
    NO_BASELINE,
    answer_lines,
    comparison_rows,
    main_rows,
    model_selection_section,
    notes,
    provenance_lines,
    seed_rows,
)

FIGURE_PATTERN = "report*.png"
GROUP_COLUMN = "group"  # the label column of comparison_rows
# a cell sorts as a number when it starts with one, after an optional sign or bracket: 0.92 ± 0.01, −0.1,
# < 0.001, [0.88, 0.95] (an interval sorts by its lower end)
_LEADING_NUMBER = re.compile(r"^\s*[\[<>≤≥]?\s*([+\-−]?\d+(?:\.\d+)?(?:[eE][+\-]?\d+)?)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`(.+?)`")
NESTED_ITEM = "  - "  # a nested item of provenance_lines
TOP_ITEM = "- "

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sweep report: {{ title }}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 110em;
       padding: 0 1em; color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.5em; word-break: break-all; }
.table { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-variant-numeric: tabular-nums;
        font-size: 0.92em; }
th, td { padding: 0.3em 0.5em; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
td:not([data-value]):not(:first-child):not(:empty) { white-space: normal; min-width: 12em; }
thead th { border-bottom: 2px solid #333; cursor: pointer; user-select: none; }
thead th::after { content: " \\2195"; color: #aaa; font-size: 0.8em; }
thead th[aria-sort="ascending"]::after { content: " \\25B2"; color: #333; }
thead th[aria-sort="descending"]::after { content: " \\25BC"; color: #333; }
tbody tr:hover { background: #f3f6fa; }
tr.best td:first-child { font-weight: bold; }
td[title] { text-decoration: underline dotted #999; }
.legend, .notes, figcaption { color: #444; font-size: 0.92em; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
code { background: #f4f4f4; padding: 0 0.2em; }
</style>
</head>
<body>
<h1>Sweep report: <code>{{ title }}</code></h1>
{% if answer %}
<h2>Answer</h2>
{{ render_list(answer) }}
{% endif %}
<p class="legend">mean ± sample std over seeds (± n/a: one seed); n = finished seeds; <strong>bold</strong>
({{ best_mark }}) = best mean{% if significance %}; <sup>{{ significance_mark }}</sup> {{ significance }}
{% else %}.{% endif %}
Hover over a value for its per-seed values; click a column header to sort.</p>
{{ render_table(main) }}
<h2>Which is better?</h2>
<p>{{ baseline_text }}</p>
{% for section in comparisons %}
<h3>{{ section.title }}</h3>
{{ render_table(section.table) }}
{% if section.notes %}
<ul class="notes">
{% for note in section.notes %}<li>{{ note }}</li>
{% endfor %}
</ul>
{% endif %}
{% endfor %}
<div class="extra">{{ extra }}</div>
{% if seed_tables %}
<details>
<summary><h2 style="display: inline">Per-seed values</h2></summary>
{% for section in seed_tables %}
<h3>{{ section.title }}</h3>
{{ render_table(section.table) }}
{% endfor %}
</details>
{% endif %}
<h2>Provenance</h2>
{{ render_list(provenance) }}
{% for figure in figures %}
<figure>
<h2>{{ figure.title }}</h2>
<img src="data:image/png;base64,{{ figure.data }}" alt="{{ figure.name }}">
<figcaption>{{ figure.caption }}</figcaption>
</figure>
{% endfor %}
<script>
(function () {
  "use strict";
  function key(cell) {
    var value = cell.getAttribute("data-value");
    return value === null ? null : parseFloat(value);
  }
  function compare(a, b, sign) {
    var x = key(a), y = key(b);
    if (x !== null && y !== null) { return sign * (x - y); }
    if (x !== null || y !== null) { return x !== null ? -1 : 1; }
    return sign * a.textContent.localeCompare(b.textContent);
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var headers = table.querySelectorAll("thead th");
    headers.forEach(function (header, column) {
      function sort() {
        var ascending = header.getAttribute("aria-sort") !== "ascending";
        headers.forEach(function (other) { other.removeAttribute("aria-sort"); });
        header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var body = table.tBodies[0];
        Array.prototype.slice.call(body.rows)
          .sort(function (a, b) { return compare(a.cells[column], b.cells[column], ascending ? 1 : -1); })
          .forEach(function (row) { body.appendChild(row); });
      }
      header.tabIndex = 0;
      header.addEventListener("click", sort);
      header.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sort(); }
      });
    });
  });
})();
</script>
</body>
</html>
"""

TABLE_MACRO = """{% macro render_table(table) %}
<div class="table"><table class="sortable">
<thead><tr>{% for column in table.columns %}<th scope="col">{{ column }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in table.rows %}
<tr{{ {"class": "best" if row.best else none, "title": row.title or none}|xmlattr }}>
{%- for cell in row.cells %}<td{{ {"data-value": cell.sort_value, "title": cell.title or none}|xmlattr }}>
{%- if cell.strong %}<strong>{{ cell.text }}</strong>{% else %}{{ cell.text }}{% endif %}
{%- if cell.mark %}<sup>{{ cell.mark }}</sup>{% endif %}</td>{% endfor %}</tr>
{% endfor %}
</tbody>
</table></div>
{% endmacro %}
{% macro render_list(items) %}
<ul>
{% for item in items %}<li>{{ item.text }}{% if item.children %}
<ul>{% for child in item.children %}<li>{{ child }}</li>{% endfor %}</ul>{% endif %}</li>
{% endfor %}
</ul>
{% endmacro %}"""


@dataclass(frozen=True)
class Cell:
    """One table cell: its text, the number it sorts by (None: sorts as text), hover text, bold or not, and
    a superscript mark."""

    text: str
    sort_value: float | None = None
    title: str = ""
    strong: bool = False
    mark: str = ""


@dataclass
class TableRow:
    cells: list[Cell]
    title: str = ""  # hover text of the whole row
    best: bool = False


@dataclass
class ListItem:
    """An item of a two-level list (the provenance block)."""

    text: Markup
    children: list[Markup] = field(default_factory=list)


@dataclass
class HtmlTable:
    columns: list[str]
    rows: list[TableRow] = field(default_factory=list)


def sort_value(text: str) -> float | None:
    """The number a cell sorts by: its leading number (``0.9233 ± 0.0252`` → 0.9233), else None."""
    match = _LEADING_NUMBER.match(text)
    if match is None:
        return None
    value = float(match.group(1).replace("−", "-"))
    return value if math.isfinite(value) else None


def _plain_table(rows: list[dict[str, str]]) -> HtmlTable:
    table = HtmlTable(list(rows[0]) if rows else [])
    for row in rows:
        table.rows.append(TableRow([Cell(text, sort_value(text)) for text in row.values()]))
    return table


def main_table(report: SweepReport, comparisons: list[MetricComparison]) -> HtmlTable:
    """The main table: per-seed values on hover, the best mean bold, a mark on a significant difference."""
    rows = main_rows(report, comparisons)
    table = _plain_table(rows)
    by_column = {metric_column(c.metric): c for c in comparisons}
    for index, row in enumerate(table.rows):
        for position, column in enumerate(table.columns):
            comparison = by_column.get(column)
            if comparison is None:
                continue
            group_row = comparison.rows[index]
            cell = row.cells[position]
            row.cells[position] = Cell(
                cell.text,
                cell.sort_value,
                seed_values(group_row),
                comparison.is_best(group_row),
                SIGNIFICANCE_MARK if is_significant(comparison, group_row) else "",
            )
    return table


def comparison_table(comparison: MetricComparison, has_baseline: bool) -> HtmlTable:
    """One metric's comparison table, each row's per-seed values on hover, the best group's label bold."""
    rows = comparison_rows(comparison, has_baseline)
    table = _plain_table(rows)
    groups = rows_by_label(comparison)
    for source, row in zip(rows, table.rows, strict=True):
        group_row: GroupRow | None = groups.get(source.get(GROUP_COLUMN, ""))
        if group_row is not None:
            row.title = seed_values(group_row)
            row.best = comparison.is_best(group_row)
    return table


def inline_markdown(text: str) -> Markup:
    """``text`` escaped, with the report's ``**bold**`` and ```code``` spans as HTML."""
    escaped = str(escape(text))
    return Markup(_CODE.sub(r"<code>\1</code>", _BOLD.sub(r"<strong>\1</strong>", escaped)))


def list_items(lines: list[str]) -> list[ListItem]:
    """A Markdown list of the report (one level nested: :func:`tables.provenance_lines`) as list items."""
    items: list[ListItem] = []
    for line in lines:
        if line.startswith(NESTED_ITEM) and items:
            items[-1].children.append(inline_markdown(line.removeprefix(NESTED_ITEM)))
        else:
            items.append(ListItem(inline_markdown(line.removeprefix(TOP_ITEM))))
    return items


def figures(sweep_dir: Path) -> list[dict[str, str]]:
    """Every ``report*.png`` of the sweep folder as base64: the known ones first, in the order and with the
    titles of ``report.md``, then any other by name."""
    known = {name: (title, caption) for name, title, caption in FIGURES}
    order = {name: position for position, name in enumerate(known)}
    paths = sorted(sweep_dir.glob(FIGURE_PATTERN), key=lambda p: (order.get(p.name, len(order)), p.name))
    shown = []
    for path in paths:
        title, caption = known.get(path.name, (path.stem.replace("_", " "), ""))
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        shown.append({"name": path.name, "title": title, "caption": inline_markdown(caption), "data": data})
    return shown


def _baseline_text(report: SweepReport, baseline: Baseline | None) -> Markup:
    if baseline is None:
        return inline_markdown(NO_BASELINE[len(report.groups) > 1])
    return inline_markdown(
        f"Baseline: **{baseline.describe(report.display_names)}**, paired by seed with the group that shares "
        "the other varying values. Δ = group − baseline; wins: seeds on which the group beat the baseline; "
        "MDE: minimum detectable effect; the test and correction of each metric are under its table."
    )


def render_html(
    report: SweepReport,
    comparisons: list[MetricComparison],
    baseline: Baseline | None,
    provenance: Provenance,
    extra_sections: list[str] | None = None,
    extra_answer: list[str] | None = None,
) -> str:
    """The whole page as one string (styles, script and figures inline); ``extra_sections`` are the
    Markdown sections ``report.md`` adds (model selection, per-class accuracy, across datasets), rendered
    with raw HTML escaped; ``extra_answer`` the list items it adds to the answer."""
    environment = Environment(
        autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    template = environment.from_string(TABLE_MACRO + TEMPLATE)
    sections = [
        {
            "title": axis_label(c.metric),
            "table": comparison_table(c, baseline is not None),
            "notes": notes(c, baseline, report.display_names),
        }
        for c in comparisons
    ]
    answer = (
        [*answer_lines(comparisons, baseline, report.display_names, report.varying), *(extra_answer or [])]
        if baseline
        else []
    )
    seed_tables = [
        {"title": c.metric, "table": _plain_table(seed_rows(c))}
        for c in comparisons
        if any(row.per_seed for row in c.rows)
    ]
    return template.render(
        title=str(report.sweep_dir),
        best_mark=BEST_MARK,
        significance_mark=SIGNIFICANCE_MARK,
        significance=significance_note(comparisons, baseline, report.display_names),
        answer=list_items(answer),
        main=main_table(report, comparisons),
        baseline_text=_baseline_text(report, baseline),
        comparisons=sections,
        seed_tables=seed_tables,
        provenance=list_items(provenance_lines(report, provenance)),
        extra=markdown_sections([*model_selection_section(report, comparisons), *(extra_sections or [])]),
        figures=figures(report.sweep_dir),
    )


def write_html(
    report: SweepReport,
    comparisons: list[MetricComparison],
    baseline: Baseline | None,
    provenance: Provenance,
    path: Path,
    extra_sections: list[str] | None = None,
    extra_answer: list[str] | None = None,
) -> None:
    """``report.html``: :func:`render_html` of the sweep."""
    page = render_html(report, comparisons, baseline, provenance, extra_sections, extra_answer)
    path.write_text(page, encoding="utf-8")


def markdown_sections(lines: list[str]) -> Markup:
    """Markdown (headings, lists, tables) as HTML; raw HTML in it is escaped, not rendered."""
    from markdown_it import MarkdownIt

    return Markup(MarkdownIt("commonmark", {"html": False}).enable("table").render("\n".join(lines)))
