"""report.html: one self-contained page, checked as a real browser renders it (headless Chromium).

The browser tests skip when no Chromium is installed, unless ``DLAB_REQUIRE_BROWSER=1`` (CI), where they
fail instead (:mod:`tests.browser`).
"""

from __future__ import annotations

import html
import json
import re
import struct
import zlib
from pathlib import Path

import pytest

from divergence_lab.report.command import main
from divergence_lab.report.html_report import sort_value
from tests.browser import run_browser
from tests.report.test_report import _job

LABEL = "a_b & 50% <b>x</b>"  # a display name with HTML and LaTeX special characters
ACCURACIES = {  # per seed; js is better than the baseline kl, rkl worse, both significantly
    "kl": [0.90, 0.92, 0.95, 0.91],
    "rkl": [0.80, 0.84, 0.83, 0.82],
    "js": [0.91, 0.935, 0.96, 0.925],
}
ECES = {"kl": [0.10, 0.12, 0.09, 0.11], "rkl": [0.15, 0.11, 0.14, 0.12], "js": [0.08, 0.13, 0.10, 0.12]}
EXTRA_FIGURE = "report_extra.png"
EXTRA_SIZE = (3, 2)  # width, height of the extra figure, in pixels
WINDOW = "1400,2400"
# Injected into a copy of the page: after load, record what rendered, click headers, write it all as JSON.
PROBE = """<script>
window.addEventListener("load", function () {
  var tables = Array.from(document.querySelectorAll("table"));
  var main = tables[0];
  function column(table, index) { return Array.from(table.tBodies[0].rows, function (r) {
    return r.cells[index].textContent; }); }
  var headers = Array.from(main.tHead.rows[0].cells);
  var acc = headers.findIndex(function (h) { return h.textContent.indexOf("test/acc") === 0; });
  var result = {
    headers: tables.map(function (t) { return Array.from(t.tHead.rows[0].cells, function (c) {
      return c.textContent; }); }),
    rows: tables.map(function (t) { return Array.from(t.tBodies[0].rows, function (r) {
      return Array.from(r.cells, function (c) { return c.textContent; }); }); }),
    titles: Array.from(main.tBodies[0].rows, function (r) { return Array.from(r.cells, function (c) {
      return c.title; }); }),
    bold: Array.from(main.querySelectorAll("td strong"), function (s) { return s.textContent; }),
    images: Array.from(document.images, function (i) { return [i.alt, i.naturalWidth, i.naturalHeight]; }),
    height: main.getBoundingClientRect().height,
    sorted: []
  };
  [acc, acc, 0].forEach(function (index) {
    headers[index].click();
    result.sorted.push({order: column(main, 0), state: headers[index].getAttribute("aria-sort")});
  });
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>
</body>"""


def png(width: int, height: int) -> bytes:
    """A valid grey PNG of ``width`` × ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    pixels = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(pixels))
        + chunk(b"IEND", b"")
    )


def make_sweep(root: Path) -> Path:
    """A finished ``divergence × seed`` sweep (kl is the baseline, rkl shown as :data:`LABEL`)."""
    folder = root / "study" / "2026-01-01_00-00-00-000000"
    folder.mkdir(parents=True)
    (folder / "multirun.yaml").write_text(f"report:\n  display_names:\n    rkl: {json.dumps(LABEL)}\n")
    num = 0
    for divergence, accuracies in ACCURACIES.items():
        for seed, (acc, ece) in enumerate(zip(accuracies, ECES[divergence], strict=True)):
            _job(
                folder,
                num,
                [f"divergence={divergence}", f"seed={seed}"],
                {"test/acc": acc, "test/ece": ece},
                seed,
            )
            num += 1
    return folder


@pytest.fixture
def reported(tmp_path: Path) -> Path:
    folder = make_sweep(tmp_path)
    (folder / EXTRA_FIGURE).write_bytes(png(*EXTRA_SIZE))
    assert main([str(folder)]) == 0
    return folder


def probe(reported: Path, tmp_path: Path) -> dict:
    """What Chromium rendered of report.html, after the probe clicked the headers."""
    page = tmp_path / "probed.html"
    page.write_text((reported / "report.html").read_text().replace("</body>", PROBE))
    dom = run_browser(page, tmp_path / "profile", "--dump-dom")
    match = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.DOTALL)
    assert match is not None, dom[-2000:]
    return json.loads(html.unescape(match.group(1)))


def test_page_is_self_contained_and_escaped(reported):
    page = (reported / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)  # nothing fetched from elsewhere
    assert "<link" not in page and "<script src" not in page
    assert LABEL not in page and html.escape(LABEL) in page
    assert page.count('src="data:image/png;base64,') == len(list(reported.glob("report*.png")))
    assert {"report.html", "report.tex"} <= {path.name for path in reported.iterdir()}


@pytest.mark.parametrize(
    ("cell", "value"),
    [("0.9233 ± 0.0252 ★", 0.9233), ("−0.0975 [−0.12, −0.07] (n=4)", -0.0975), ("< 0.001", 0.001),
     ("1=", 1.0), ("[0.8856, 0.9544]", 0.8856), ("+1e-05", 1e-05), ("baseline", None),
     ("not tested (n=2 < 3)", None), ("", None)],
)  # fmt: skip
def test_cells_sort_by_their_leading_number(cell, value):
    assert sort_value(cell) == (None if value is None else pytest.approx(value))


def test_browser_renders_tables_figures_and_sorts(reported, tmp_path):
    shown = probe(reported, tmp_path)
    main_headers, main_rows = shown["headers"][0], shown["rows"][0]
    assert main_headers == ["divergence", "n", "test/acc ↑", "test/ece ↓"]
    assert [row[0] for row in main_rows] == ["kl", LABEL, "js"]  # the label as text, not as markup
    assert main_rows[0][:3] == ["kl", "4", "0.9200 ± 0.0216"]
    assert main_rows[2][2] == "0.9325 ± 0.0210 ★*"  # best (bold) and significantly better than kl
    assert "0.9325 ± 0.0210 ★" in shown["bold"]
    assert shown["titles"][0][2] == "seed 0: 0.9000, seed 1: 0.9200, seed 2: 0.9500, seed 3: 0.9100"
    assert shown["height"] > 0
    # the main table, one comparison table per metric, one per-seed table per metric
    assert len(shown["headers"]) == 1 + 2 + 2
    accuracy_headers, accuracy_rows = shown["headers"][1], shown["rows"][1]
    assert accuracy_headers[0] == "group" and "rank" in accuracy_headers
    assert [row[0] for row in accuracy_rows] == ["js", "kl", LABEL]  # best first
    assert shown["headers"][3] == ["group", "seed 0", "seed 1", "seed 2", "seed 3"]
    images = {alt: (width, height) for alt, width, height in shown["images"]}
    assert images[EXTRA_FIGURE] == EXTRA_SIZE
    assert images["report.png"][0] > EXTRA_SIZE[0]  # the matplotlib figure decoded
    ascending, descending, by_label = shown["sorted"]
    assert ascending == {"order": [LABEL, "kl", "js"], "state": "ascending"}
    assert descending == {"order": ["js", "kl", LABEL], "state": "descending"}
    assert by_label == {"order": [LABEL, "js", "kl"], "state": "ascending"}


def test_browser_screenshot_is_not_blank(reported, tmp_path):
    from matplotlib.image import imread

    shot = tmp_path / "report.png"
    run_browser(
        reported / "report.html", tmp_path / "profile", f"--screenshot={shot}", f"--window-size={WINDOW}"
    )
    pixels = imread(shot)
    width, height = (int(size) for size in WINDOW.split(","))
    assert pixels.shape[:2] == (height, width)
    assert pixels.std() > 0  # text, tables and figures, not one flat colour
