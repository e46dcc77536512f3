"""report.tex: the main table as a booktabs table, checked line by line, and compiled where a TeX engine is
installed (skipped otherwise)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from divergence_lab.report.command import main
from divergence_lab.report.latex_table import escape
from tests.report.test_html_report import make_sweep
from tests.report.test_report import _job

ESCAPED_LABEL = r"a\_b \& 50\% \textless{}b\textgreater{}x\textless{}/b\textgreater{}"
COLUMN_SEPARATOR = re.compile(r"(?<!\\)&")
ENGINES = {  # engine -> its command line for a document in the working directory
    "pdflatex": ["pdflatex", "-interaction=nonstopmode", "-halt-on-error"],
    "lualatex": ["lualatex", "-interaction=nonstopmode", "-halt-on-error"],
    "tectonic": ["tectonic", "--chatter", "minimal"],
}
COMPILE_TIMEOUT_S = 300
DOCUMENT = r"""\documentclass{article}
\usepackage[T1]{fontenc}
\usepackage{booktabs}
\begin{document}
%s
\end{document}
"""


def _body(tex: str) -> list[str]:
    """The table's data rows: the lines between \\midrule and \\bottomrule."""
    lines = tex.splitlines()
    return lines[lines.index(r"\midrule") + 1 : lines.index(r"\bottomrule")]


@pytest.fixture
def tex(tmp_path: Path) -> str:
    folder = make_sweep(tmp_path)
    assert main([str(folder)]) == 0
    return (folder / "report.tex").read_text()


def test_every_special_character_is_escaped():
    assert escape("_ % & # $ { } ~ ^ \\") == (
        r"\_ \% \& \# \$ \{ \} \textasciitilde{} \textasciicircum{} \textbackslash{}"
    )
    assert escape("0.92 ± 0.01 ↑ −0.1 —") == r"0.92 $\pm$ 0.01 $\uparrow$ $-$0.1 ---"
    assert escape("[64, 32]") == "{[}64, 32{]}"  # never read as an optional argument after \\


def test_main_table_is_a_booktabs_table_with_one_row_per_group(tex):
    lines = tex.splitlines()
    rules = [lines.index(rule) for rule in (r"\toprule", r"\midrule", r"\bottomrule")]
    assert rules == sorted(rules)
    assert r"\begin{tabular}{lrrr}" in lines
    assert lines[rules[0] + 1] == r"divergence & n & test/acc $\uparrow$ & test/ece $\downarrow$ \\"
    body = _body(tex)
    assert [row.split(" & ")[0] for row in body] == ["kl", ESCAPED_LABEL, "js"]
    assert all(len(COLUMN_SEPARATOR.findall(row)) == 3 and row.endswith(r" \\") for row in body)


def test_best_is_bold_and_significance_is_marked_and_explained(tex):
    kl, rkl, js = _body(tex)
    assert kl == r"kl & 4 & 0.9200 $\pm$ 0.0216 & \textbf{0.1050 $\pm$ 0.0129} \\"  # baseline: no mark
    assert js.split(" & ")[2] == r"\textbf{0.9325 $\pm$ 0.0210}$^{*}$"  # best accuracy, better than kl
    assert rkl.split(" & ")[2] == r"0.8225 $\pm$ 0.0171$^{*}$"  # worse than kl
    assert "★" not in tex and r"\textbf" not in rkl
    note = tex.split(r"\footnotesize", 1)[1]
    assert r"$^{*}$ differs from the baseline divergence=kl" in note
    assert r"paired t test, Holm-corrected" in note and r"p \textless{} 0.05" in note


def test_uncorrected_p_values_say_so(tmp_path):
    folder = make_sweep(tmp_path)
    assert main([str(folder), "--correction", "none"]) == 0
    assert "not corrected for multiple comparisons" in (folder / "report.tex").read_text()


def test_single_group_has_no_bold_and_no_significance(tmp_path):
    for seed in range(3):
        _job(tmp_path, seed, [f"seed={seed}"], {"test/acc": 0.5 + 0.1 * seed}, seed)
    assert main([str(tmp_path), "--metrics", "test/acc"]) == 0
    tex = (tmp_path / "report.tex").read_text()
    assert _body(tex) == [r"all runs & 3 & 0.6000 $\pm$ 0.1000 \\"]
    assert r"\textbf" not in tex and "differs from the baseline" not in tex


def test_table_compiles(tex, tmp_path):
    engine = next((name for name in ENGINES if shutil.which(name)), None)
    if engine is None:
        pytest.skip(f"no TeX engine ({', '.join(ENGINES)}) on PATH")
    source = tmp_path / "table.tex"
    source.write_text(DOCUMENT % tex)
    result = subprocess.run(
        [*ENGINES[engine], source.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=COMPILE_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert (tmp_path / "table.pdf").stat().st_size > 0
