"""The unattended GPU check runs here in its dry-run form: every step at tiny size on the CPU
(SD3 latency, scorers vs the bare forward, two SD3 CDM steps), one results file."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "gpu_check.md"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = out.read_text()
    for section in ("## latency", "## scorers", "## train"):
        assert f"{section} (" in text and "exit 0)" in text.split(section)[1].splitlines()[0]
    assert "student-4nfe" in text and "| clipscore |" in text and "Two SD3 CDM steps" in text
