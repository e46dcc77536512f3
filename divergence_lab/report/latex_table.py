r"""``report.tex``: the main table of the report as a LaTeX ``booktabs`` table, ready to paste into a paper.

The rows and cells are those of ``report.md`` (:func:`divergence_lab.report.tables.main_rows`), so a column
added there appears here too. The best mean of each metric is set in bold instead of the ★, and a value
whose group differs significantly from its baseline group carries a superscript ``*``, explained in a line
under the table (:mod:`divergence_lab.report.emphasis`). Every cell is escaped: labels come from user
configs. The fragment needs ``\usepackage{booktabs}`` in the preamble.
"""

from __future__ import annotations

from pathlib import Path

from divergence_lab.report.collect import SweepReport
from divergence_lab.report.comparison import Baseline, GroupRow, MetricComparison
from divergence_lab.report.emphasis import (
    SIGNIFICANCE_MARK,
    is_significant,
    metric_column,
    significance_note,
)
from divergence_lab.report.tables import BEST_MARK, main_rows

# the characters LaTeX treats specially, and the text that prints them
LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "[": "{[}",  # braced: a cell opening with [ would read as the optional argument of \\ or a rule
    "]": "{]}",
}
# the non-ASCII characters the report's cells use, spelled so that pdflatex needs no extra package
UNICODE_SYMBOLS = {
    "±": r"$\pm$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "−": r"$-$",
    "—": "---",
    "–": "--",
    "Δ": r"$\Delta$",
    BEST_MARK: r"$\star$",
    "†": r"$^{\dagger}$",
    "∞": r"$\infty$",
    "…": r"\dots{}",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "×": r"$\times$",
}
_TRANSLATION = str.maketrans({**LATEX_SPECIAL, **UNICODE_SYMBOLS})
LABEL = "tab:sweep-report"
FIRST_COLUMN_ALIGN = "l"  # group labels
VALUE_COLUMN_ALIGN = "r"  # numbers
SIGNIFICANT_MARK = rf"$^{{{SIGNIFICANCE_MARK}}}$"


def escape(text: str) -> str:
    """``text`` as LaTeX prints it: special characters escaped, the report's symbols spelled out."""
    return text.translate(_TRANSLATION)


def _cell(text: str, row: GroupRow | None, comparison: MetricComparison | None) -> str:
    if comparison is None or row is None:
        return escape(text)
    shown = escape(text.replace(f" {BEST_MARK}", ""))  # the bold says it
    if comparison.is_best(row):
        shown = rf"\textbf{{{shown}}}"
    return shown + (SIGNIFICANT_MARK if is_significant(comparison, row) else "")


def _line(cells: list[str]) -> str:
    return " & ".join(cells) + r" \\"


def latex_table(report: SweepReport, comparisons: list[MetricComparison], baseline: Baseline | None) -> str:
    """The main table as a ``table`` environment with a ``booktabs`` tabular, caption and notes."""
    rows = main_rows(report, comparisons)
    columns = list(rows[0]) if rows else ["group"]
    by_column = {metric_column(c.metric): c for c in comparisons}
    body = []
    for index, row in enumerate(rows):
        cells = []
        for column in columns:
            comparison = by_column.get(column)
            group_row = comparison.rows[index] if comparison is not None else None
            cells.append(_cell(row[column], group_row, comparison))
        body.append(_line(cells))
    caption = escape(f"Sweep {report.sweep_dir.name}: mean ± sample std over seeds; n: finished seeds.")
    notes = [escape("Bold: best mean of a metric whose better direction is known.")]
    if significance := significance_note(comparisons, baseline, report.display_names):
        notes.append(f"{SIGNIFICANT_MARK} {escape(significance)}")
    align = FIRST_COLUMN_ALIGN + VALUE_COLUMN_ALIGN * (len(columns) - 1)
    lines = [
        r"% requires \usepackage{booktabs}",
        r"\begin{table}[ht]",
        r"\centering",
        rf"\caption{{{caption}}}",
        rf"\label{{{LABEL}}}",
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        _line([escape(column) for column in columns]),
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        "",
        r"\smallskip",
        r"{\footnotesize " + " ".join(notes) + "}",
        r"\end{table}",
        "",
    ]
    return "\n".join(lines)


def write_latex(
    report: SweepReport, comparisons: list[MetricComparison], baseline: Baseline | None, path: Path
) -> None:
    """``report.tex``: :func:`latex_table` of the sweep."""
    path.write_text(latex_table(report, comparisons, baseline))
