"""The HTML report in a real browser (headless Chromium): no console errors, one table row per
generator, every grid image shown, the charts present; a screenshot is kept as an artefact.
Also the LaTeX table (compiled when a TeX toolchain is present)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cdm_bench.evaluate import evaluate
from cdm_bench.generate import generate
from cdm_bench.leaderboard import write_leaderboard

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
GENERATORS = [{"generator": "toy-real", "name": "reference", "recipe": "reference", "preset": "tiny"}] + [
    {"generator": "toy", "name": f"teacher-{n}", "preset": "tiny", "nfe": n} for n in (1, 2, 4)] + [
    {"generator": "toy", "name": "teacher-4-cfg", "preset": "tiny", "nfe": 4, "guidance": 2.0}]
METRICS = [{"name": "toy_align", "scorer": "tiny"}, {"name": "toy_fid", "scorer": "tiny"}]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    for spec in GENERATORS:
        run = generate(spec, "toy-small", root / "runs" / spec["name"], 2, limit=6, progress=False)
        evaluate(run, METRICS, progress=False)
    return write_leaderboard([root / "runs"], root / "lb")


def _chromium(*args, cwd):
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make test installs it)")
def test_report_in_headless_chromium(report):
    html = report["html"]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html.read_text())  # nothing from the network
    dom = _chromium("--dump-dom", html.as_uri(), cwd=html.parent)
    console = [ln for ln in dom.stderr.splitlines() if ":CONSOLE" in ln]
    assert dom.returncode == 0 and not console, console
    body = dom.stdout
    table = body[body.index('id="leaderboard"'):body.index("</table>", body.index('id="leaderboard"'))]
    assert table.count("<tr>") == 1 + len(GENERATORS)  # header + one row per generator
    shown = int(re.search(r'data-images-shown="(\d+)"', body).group(1))
    assert shown == int(re.search(r'data-images="(\d+)"', body).group(1)) == len(GENERATORS) * 6
    assert body.count('class="chart bar"') == 2 and body.count('class="chart nfe"') == 2
    assert body.count("<svg") >= 4
    shot = Path(os.environ.get("CDM_TEST_ARTEFACTS", html.parent)) / "report_screenshot.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    _chromium(f"--screenshot={shot}", "--window-size=1400,2000", html.as_uri(), cwd=html.parent)
    assert shot.exists() and shot.stat().st_size > 10_000


def test_latex_table_marks_best_and_second(report):
    tex = report["tex"].read_text()
    assert r"\toprule" in tex and r"toy\_fid $\downarrow$" in tex and r"toy\_align $\uparrow$" in tex
    rows = {ln.split(" & ")[0]: ln for ln in tex.splitlines() if " & " in ln}
    assert r"\textbf{" in rows["reference"]  # real images: best on both metrics
    assert tex.count(r"\textbf{") >= 2 and tex.count(r"\underline{") >= 2
    if shutil.which("pdflatex") is None:
        pytest.skip("no TeX toolchain: compile check skipped")
    from cdm_bench.report.tables import latex_document

    doc = report["tex"].parent / "doc.tex"
    doc.write_text(latex_document(tex))
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", doc.name], cwd=doc.parent, capture_output=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
