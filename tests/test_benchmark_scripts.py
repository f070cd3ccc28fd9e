"""The SD3 benchmark scripts: their --tiny modes run end to end and write sane tables; the memory
script's measuring tools count what they claim to."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))


def run_script(name: str, *args: str) -> None:
    proc = subprocess.run([sys.executable, str(BENCH / name), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def table_rows(text: str) -> dict:
    """First cell -> the other cells, for every Markdown table row."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def number(cell: str) -> float:
    return float(cell.replace(",", "").replace("*", ""))


def test_memory_script_tiny(tmp_path):
    from diffusers import SD3Transformer2DModel
    from sd3_gpu_latency import TINY

    out = tmp_path / "sd3_memory.md"
    run_script("sd3_memory.py", "--tiny", "--out", str(out))
    text, _, lora = out.read_text().partition("## LoRA recipe vs full")
    rows = table_rows(text)
    expected = sum(p.numel() for p in SD3Transformer2DModel(**TINY).parameters())
    assert number(rows["parameters"][0]) == expected
    assert number(rows["parameter bytes (bf16)"][0]) == 2 * expected
    pieces = [k for k in rows if k.startswith(("student", "fake", "frozen", "buffers", "FSDP2", "text encoders",
                                               "CUDA", "teacher no_grad"))]
    assert len(pieces) == 14, pieces
    assert all(number(rows[k][1]) > 0 for k in pieces)
    static = [k for k in pieces if not re.search(r"\d+ rows", k)]
    total = number(rows["**total per GPU**"][1])
    peak = number(rows["**activation peak**"][1])
    assert total == pytest.approx(sum(number(rows[k][1]) for k in static) + peak, rel=1e-9)
    assert peak > number(next(rows[k] for k in rows if k.startswith("student checkpoint boundaries"))[1])
    assert 0 < number(rows["total, text embeddings precomputed (no encoders resident)"][1]) < total
    assert "2 rows / 1 row = 2.000" in text  # activations linear in the batch
    assert "Command: `" in text and "Date: " in text
    lrows = table_rows(lora)  # the LoRA recipe: adapters on one frozen base, at 1 / 2 / 8 GPUs
    assert [k for k in lrows if k in ("1", "2", "8")] == ["1", "2", "8"]
    assert number(lrows["student adapters: fp32 params + grads + AdamW m, v (sharded)"][1]) > 0
    assert number(lrows["frozen base (teacher = adapters off; student and fake = its adapters): bf16 params (sharded)"
                        ][1]) == pytest.approx(2 * expected / 8)


def test_latency_script_tiny(tmp_path):
    out = tmp_path / "sd3_gpu_latency.md"
    run_script("sd3_gpu_latency.py", "--device", "cpu", "--tiny", "--warmup", "0", "--repeats", "1",
               "--out", str(out))
    rows = table_rows(out.read_text())
    for name, steps, guidance, nfe in (("student-4nfe", 4, 1.0, 4), ("teacher-28-cfg4.5", 28, 4.5, 56),
                                       ("teacher-50-cfg4.5", 50, 4.5, 100)):
        cells = rows[name]
        assert (int(cells[0]), float(cells[1]), int(cells[2])) == (steps, guidance, nfe)
        assert 0 < number(cells[3]) < 600 and number(cells[5]) > 0
        assert cells[6] == "n/a (cpu)" and cells[7] == "True"


def test_live_bytes_counts_new_storages_only():
    from sd3_memory import LiveBytes, saved_bytes, storages

    x = torch.ones(1000)  # 4,000 bytes made before the mode: not counted, nor are its views
    with torch.no_grad(), LiveBytes() as live:
        x.view(10, 100).t()
        assert live.peak == 0
        y = x * 2
        z = y + 1
        assert live.now == 8000
        del y
        assert live.now == 4000 and live.peak == 8000
        del z
    assert live.now == 0
    w = torch.ones(1000, requires_grad=True)
    assert saved_bytes(lambda: (w * 2).sin(), exclude=storages([w])) == 4000  # sin saves w * 2
    assert saved_bytes(lambda: w.sin(), exclude=storages([w])) == 0


def test_stand_in_tokenizers_and_tied_t5():
    from sd3_gpu_latency import meta_model, text_encoder_configs, word_tokenizer
    from transformers import T5EncoderModel

    clip = word_tokenizer("clip", 77, 49408)
    ids = clip(["a cat"], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert ids.shape == (1, 77) and ids[0, 0] == 49406 and ids[0, 3] == 49407
    t5 = word_tokenizer("t5", 256, 32128)
    ids = t5(["a cat"], padding="max_length", max_length=256, truncation=True, return_tensors="pt").input_ids
    assert ids.shape == (1, 256) and ids[0, 2] == 1 and ids[0, 3] == 0
    model = meta_model(T5EncoderModel, text_encoder_configs(tiny=True)["t5_xxl"][1])
    assert model.shared.weight is model.encoder.embed_tokens.weight
