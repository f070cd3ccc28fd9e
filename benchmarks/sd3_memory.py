"""Real-size SD3-Medium transformer: parameter count and a per-GPU memory estimate for the CDM recipe.

    .venv/bin/python benchmarks/sd3_memory.py --out benchmarks/results/sd3_memory.md   (~2 min, 5.4 GiB RSS)
    .venv/bin/python benchmarks/sd3_memory.py --tiny --out /tmp/sd3_memory_tiny.md      (seconds)

It ends with the LoRA recipe beside the full one at 1, 2 and 8 GPUs (benchmarks/lora_memory.py).

The transformer (SD3-Medium's ``transformer/config.json``, random weights) is built with its
parameters on the meta device (accelerate ``init_empty_weights``; the sin-cos ``pos_embed`` buffer
is computed for real) and materialised once in bf16 (seeded normal(0, 0.02)). On CPU, for one
real-size ``JointTransformerBlock`` at 1024 px (4,096 image + 333 text tokens) and one row, it
measures the autograd saved tensors of a forward (``saved_tensors_hooks``, distinct storages,
parameters and inputs excluded) and, with :class:`LiveBytes` (a ``TorchDispatchMode`` counting each
storage an op creates until its last tensor dies), the no_grad peak of live intermediates, what a
checkpointed forward retains (the boundary) and the peak of a checkpointed forward + backward; also
under CUDA's autocast policy, for the last block and the layers outside the blocks, and at smaller
token counts (fit a + bL + cL^2: CPU SDPA in bf16 is flash attention, c ~ 0, as on an H100).
:func:`estimate` derives the per-GPU memory of the recipe (FSDP2 on 8 GPUs, batch 16) from them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]
import cdm_bench  # noqa: E402,F401  (torchvision shim, before diffusers imports transformers)
from memory_tools import LiveBytes, cuda_autocast_policy, peak_rss, saved_bytes, storages  # noqa: E402,F401
from lora_memory import comparison, lora_counts  # noqa: E402
from sd3_gpu_latency import SD3_MEDIUM, TINY, materialise_, meta_model, text_encoder_configs  # noqa: E402

GiB = 2 ** 30
H100_BYTES = 81559 * 2 ** 20  # nvidia-smi total for an H100 SXM "80 GB"


@dataclass
class Setting:
    config: dict
    latent: int = 128            # 1024 px / 8 (VAE)
    text_tokens: int = 333       # 77 CLIP + 256 T5
    batch: int = 16              # per GPU
    world: int = 8
    student_inputs: int = 2      # CDM: on-trajectory (CA, DM) + off-trajectory input -> 2B rows with grad
    teacher_calls: int = 4       # rows / B of the one batched real-net call: CA cond+uncond, DM, off-traj
    fake_calls: int = 2          # rows / B of the fake-net no_grad call: DM, off-traj
    fit_tokens: list = field(default_factory=lambda: [256, 1024, 2304])
    text_encoders: str = "full"


REAL = Setting(SD3_MEDIUM)
TINY_SETTING = Setting(TINY, latent=16, text_tokens=16, fit_tokens=[4, 16, 36], text_encoders="tiny")


# -- the model --------------------------------------------------------------------------------
def materialise(config: dict, dtype=torch.bfloat16, seed: int = 0):
    """Build on the meta device, then create every parameter once in ``dtype`` (seeded init)."""
    from accelerate import init_empty_weights
    from diffusers import SD3Transformer2DModel

    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    rss0, t0 = peak_rss(), time.perf_counter()
    with init_empty_weights(include_buffers=False):
        model = SD3Transformer2DModel(**config)
    materialise_(model, "cpu", dtype, seed)
    return model.eval(), {"seconds": time.perf_counter() - t0, "peak_rss": peak_rss(), "rss_before": rss0}


def counts(model) -> dict:
    blocks = model.transformer_blocks
    in_blocks = sum(p.numel() for p in blocks.parameters())
    total = sum(p.numel() for p in model.parameters())
    return {"params": total, "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
            "block_params": max(sum(p.numel() for p in b.parameters()) for b in blocks),
            "last_block_params": sum(p.numel() for p in blocks[-1].parameters()),
            "non_block_params": total - in_blocks, "blocks": len(blocks),
            "buffer_bytes": sum(b.numel() * b.element_size() for b in model.buffers()), **lora_counts(model)}


def text_encoder_params(kind: str) -> dict:
    """CLIP-L, CLIP-G (with projections) and the T5-XXL encoder, built on the meta device."""
    from transformers import CLIPTextModelWithProjection, T5EncoderModel

    out = {}
    for name, (cls, cfg) in text_encoder_configs(kind == "tiny").items():
        model = meta_model({"clip": CLIPTextModelWithProjection, "t5": T5EncoderModel}[cls], cfg)
        out[name] = sum(p.numel() for p in model.parameters())
    return out


def block_inputs(dim: int, img: int, txt: int, rows: int = 1, grad: bool = False):
    g = torch.Generator().manual_seed(1)
    make = lambda *s: torch.randn(*s, generator=g, dtype=torch.bfloat16).requires_grad_(grad)  # noqa: E731
    return make(rows, img, dim), make(rows, txt, dim), make(rows, dim)


def run_block(block, h, c, t):
    enc, hid = block(hidden_states=h, encoder_hidden_states=c, temb=t)
    return hid if enc is None else (enc, hid)


def measure_block(block, s: Setting, img: int | None = None, rows: int = 1, full: bool = True) -> dict:
    """The pieces of one block at ``img`` image tokens (default: the setting's) and ``rows`` rows."""
    from torch.utils.checkpoint import checkpoint

    dim = block.norm1.linear.in_features
    img = img or (s.latent // s.config["patch_size"]) ** 2
    h, c, t = block_inputs(dim, img, s.text_tokens, rows, grad=True)
    skip = storages([h, c, t, *block.parameters()])
    block.requires_grad_(True)
    out = {"input_bytes": sum(x.untyped_storage().nbytes() for x in (h, c, t)),
           "saved": saved_bytes(lambda: run_block(block, h, c, t), skip)}
    if full:
        with torch.no_grad(), LiveBytes() as live:
            run_block(block, h, c, t)
        out["nograd_peak"] = live.peak
        hooks = [p.register_post_accumulate_grad_hook(lambda p: setattr(p, "grad", None))
                 for p in block.parameters()]
        with LiveBytes() as live:
            res = checkpoint(run_block, block, h, c, t, use_reentrant=False)
            out["boundary"], out["ckpt_forward_peak"] = live.now, live.peak
            live.reset_peak()
            grads = [torch.ones_like(r) for r in (res if isinstance(res, tuple) else (res,))]
            torch.autograd.backward(res, grads)
            out["ckpt_backward_peak"] = live.peak
        del res, grads
        [hk.remove() for hk in hooks]
    block.requires_grad_(False)
    return out


def measure_outside(model, s: Setting) -> dict:
    """Saved bytes and no_grad peak of everything outside the blocks (embedders, norm_out, proj_out)."""
    cfg, blocks = model.config, model.transformer_blocks
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, cfg.in_channels, s.latent, s.latent, generator=g, dtype=torch.bfloat16)
    enc = torch.randn(1, s.text_tokens, cfg.joint_attention_dim, generator=g, dtype=torch.bfloat16)
    pooled = torch.randn(1, cfg.pooled_projection_dim, generator=g, dtype=torch.bfloat16)
    step = torch.tensor([500.0])
    fwd = lambda: model(x, enc, pooled, step, return_dict=False)[0]  # noqa: E731
    model.transformer_blocks = torch.nn.ModuleList()
    try:
        model.requires_grad_(True)
        skip = storages([x, enc, pooled, step, *model.parameters(), *model.buffers()])
        saved = saved_bytes(fwd, skip)
        with torch.no_grad(), LiveBytes() as live:
            fwd()
    finally:
        model.transformer_blocks = blocks
        model.requires_grad_(False)
    return {"saved": saved, "nograd_peak": live.peak}


def fit_tokens(block, s: Setting, measured_at: tuple[int, int]) -> dict:
    """Saved bytes per row at several image-token counts; fit a + b*L + c*L^2 (L = all tokens)."""
    points = [(n + s.text_tokens, measure_block(block, s, img=n, full=False)["saved"]) for n in s.fit_tokens]
    xs = np.array([p[0] for p in points], dtype=float)
    a, b, c = np.linalg.lstsq(np.stack([np.ones_like(xs), xs, xs ** 2], 1), np.array([p[1] for p in points], float),
                              rcond=None)[0]
    L, real = measured_at
    two_rows = measure_block(block, s, img=s.fit_tokens[0], rows=2, full=False)["saved"]
    return {"points": points, "coef": (a, b, c), "predicted": a + b * L + c * L * L, "measured": real,
            "rows2_ratio": two_rows / points[0][1]}


def measure(s: Setting) -> dict:
    model, mat = materialise(s.config)
    cnt = counts(model)
    t0 = time.perf_counter()
    img = (s.latent // s.config["patch_size"]) ** 2
    first = measure_block(model.transformer_blocks[0], s)
    with cuda_autocast_policy():
        autocast = measure_block(model.transformer_blocks[0], s)
    last = measure_block(model.transformer_blocks[-1], s)
    outside = measure_outside(model, s)
    fit = fit_tokens(model.transformer_blocks[0], s, (img + s.text_tokens, first["saved"]))
    return {"materialise": mat, "counts": cnt, "block": first, "last_block": last, "outside": outside,
            "autocast": autocast, "fit": fit, "text_encoders": text_encoder_params(s.text_encoders),
            "image_tokens": img, "measure_seconds": time.perf_counter() - t0}


# -- the estimate -----------------------------------------------------------------------------
def estimate(m: dict, s: Setting, block: str = "block") -> dict:
    """Per-GPU bytes of the recipe, from the measured pieces; rows: (piece, formula, bytes, kind).
    ``block="autocast"``: the joint-block pieces measured under the CUDA autocast policy."""
    c, blk, last, out = m["counts"], m[block], m["last_block"], m["outside"]
    N, W, B, nb = c["params"], s.world, s.batch, c["blocks"]
    rs, rt = s.student_inputs * B, s.teacher_calls * B
    # block 0's inputs + each block's outputs (the next one's inputs) + what the outside layers save
    boundary_row = blk["input_bytes"] + (nb - 1) * blk["boundary"] + last["boundary"] + out["saved"]
    nograd_row = max(blk["input_bytes"] + blk["nograd_peak"], out["nograd_peak"])  # a block vs the outside layers
    static = [
        ("student: fp32 params + fp32 grads + AdamW m, v (sharded)", "16 N / W", 16 * N / W, "derived"),
        ("fake teacher: same", "16 N / W", 16 * N / W, "derived"),
        ("student EMA: fp32 params, no grads (sharded)", "4 N / W", 4 * N / W, "derived"),
        ("frozen teacher: bf16 params (sharded)", "2 N / W", 2 * N / W, "derived"),
        ("buffers (pos_embed, not sharded): 3 fp32 copies + teacher bf16", "(3*2 + 1) * buf_bf16",
         7 * c["buffer_bytes"], "measured buf"),
        ("FSDP2 all-gather: 2 blocks bf16 (current + prefetch) + 3 roots (non-block) bf16",
         "2 * 2 P_blk + 3 * 2 P_root", 4 * c["block_params"] + 6 * c["non_block_params"], "derived"),
        ("FSDP2 backward: unsharded bf16 block grads + fp32 reduce-scatter input",
         "(2 + 4) P_blk", 6 * c["block_params"], "derived"),
    ]
    te = sum(m["text_encoders"].values())
    static.append(("text encoders resident, bf16, replicated (CLIP-L + CLIP-G + T5-XXL enc.)",
                   "2 * N_text", 2 * te, "measured N_text"))
    static.append(("CUDA context + NCCL buffers (typical, assumed)", "1 GiB", 1 * GiB, "assumed"))
    acts = [
        (f"student checkpoint boundaries, {rs} rows", "rows_s * (in_0 + 23 bnd + bnd_last + outside_saved)",
         rs * boundary_row, "measured/row"),
        (f"student backward: one block recompute + grads, {rs} rows", "rows_s * ckpt_bwd_peak",
         rs * blk["ckpt_backward_peak"], "measured/row"),
        (f"teacher no_grad forward, {rt} rows (one batched real-net call)", "rows_t * nograd_row",
         rt * nograd_row, "measured/row"),
        (f"fake no_grad forward, {s.fake_calls * B} rows", "rows_f * nograd_row",
         s.fake_calls * B * nograd_row, "measured/row"),
        (f"fake-teacher training phase, {B} rows (boundaries + backward)", "B * (bnd_row + ckpt_bwd_peak)",
         B * (boundary_row + blk["ckpt_backward_peak"]), "measured/row"),
        (f"(not used) student without checkpointing, {rs} rows", "rows_s * (24 saved + outside)",
         rs * (blk["saved"] * (nb - 1) + last["saved"] + out["saved"] + blk["input_bytes"]), "measured/row"),
    ]
    peak = lambda teacher: max(acts[0][2] + max(acts[1][2], teacher, acts[3][2]), acts[4][2])  # noqa: E731
    base, peak_act = sum(r[2] for r in static), peak(acts[2][2])
    return {"static": static, "activations": acts, "peak_activations": peak_act, "total": base + peak_act,
            "total_no_text": base - 2 * te + peak_act, "text_bytes": 2 * te,
            "total_real_cfg": base + peak(acts[2][2] * (s.teacher_calls + 2) / s.teacher_calls)}


# -- the report -------------------------------------------------------------------------------
def gib(x: float) -> str:
    return f"{x / GiB:.2f}"


def report(m: dict, e: dict, s: Setting, argv: list[str]) -> str:
    c, mat, blk, fit, last, out, ac = (m[k] for k in ("counts", "materialise", "block", "fit", "last_block",
                                                       "outside", "autocast"))
    mib = lambda x: f"{x / 2**20:.1f}"  # noqa: E731
    model = [("parameters", f"{c['params']:,}"), ("parameter bytes (bf16)", f"{c['param_bytes']:,}"),
             ("blocks", f"{c['blocks']} (params per joint block {c['block_params']:,}; "
                        f"last block {c['last_block_params']:,})"),
             ("parameters outside blocks", f"{c['non_block_params']:,}"),
             ("buffer bytes (bf16 pos_embed)", f"{c['buffer_bytes']:,}"),
             ("meta -> materialise (bf16, seeded init) wall time", f"{mat['seconds']:.1f} s"),
             ("peak RSS of that step (process VmHWM, reset just before; incl. imports)",
              f"{gib(mat['peak_rss'])} GiB (before: {gib(mat['rss_before'])} GiB)"),
             *((f"text encoder {k} parameters", f"{v:,}") for k, v in m["text_encoders"].items())]
    pieces = [("block inputs (hidden, encoder, temb)", mib(blk["input_bytes"]), "tensor sizes"),
              ("joint block: autograd saved tensors", mib(blk["saved"]), "saved_tensors_hooks (params, inputs excluded)"),
              ("last block (context_pre_only): saved", mib(last["saved"]), "same"),
              ("joint block: no_grad peak of live intermediates", mib(blk["nograd_peak"]), "LiveBytes"),
              ("joint block: checkpoint boundary (retained after a checkpointed forward)", mib(blk["boundary"]),
               "LiveBytes"),
              ("last block: checkpoint boundary", mib(last["boundary"]), "LiveBytes"),
              ("joint block: checkpointed forward + backward peak", mib(blk["ckpt_backward_peak"]),
               "LiveBytes (weight grads dropped on accumulate)"),
              ("joint block under CUDA-policy autocast (fp32 layer_norm): saved / no_grad peak / ckpt fwd+bwd peak",
               f"{mib(ac['saved'])} / {mib(ac['nograd_peak'])} / {mib(ac['ckpt_backward_peak'])}", "same tools"),
              ("outside the blocks: saved / no_grad peak", f"{mib(out['saved'])} / {mib(out['nograd_peak'])}",
               "hooks / LiveBytes")]
    lines = [
        f"# SD3-Medium transformer: parameters and per-GPU memory estimate{' (TINY)' if s.config is TINY else ''}",
        "", f"Command: `{' '.join(['.venv/bin/python', 'benchmarks/sd3_memory.py', *argv])}`  ",
        f"Date: {datetime.date.today().isoformat()}; torch {torch.__version__}, {platform.machine()} CPU, "
        f"measuring {m['measure_seconds']:.0f} s", "", "## Model", "", "| quantity | value |", "|---|---|",
        *(f"| {k} | {v} |" for k, v in model), "",
        f"## Measured pieces (one row, {m['image_tokens']} image + {s.text_tokens} text tokens, bf16, CPU)", "",
        "| piece | MiB / row | how |", "|---|---|---|", *(f"| {a} | {b} | {h} |" for a, b, h in pieces), "",
        "Saved bytes vs total tokens L (fit a + bL + cL^2 over "
        + ", ".join(f"L={L}: {mib(v)} MiB" for L, v in fit["points"])
        + f"): c = {fit['coef'][2]:.3g} B/token^2, b = {fit['coef'][1]:.0f} B/token; predicted at "
        f"L={m['image_tokens'] + s.text_tokens}: {mib(fit['predicted'])} MiB vs measured {mib(fit['measured'])} "
        f"MiB. 2 rows / 1 row = {fit['rows2_ratio']:.3f} (linear in the batch).", "",
        "A no_grad forward holds, per row, nograd_row = max(block inputs + block no_grad peak, outside "
        "no_grad peak); the checkpointed student holds per row bnd_row = block-0 inputs + each block's "
        "output (the next block's input, kept by the checkpoint) + what the layers outside the blocks "
        "save.", "",
    ]
    return "\n".join(lines + table(e, s, c, estimate(m, s, "autocast")) + [""] + comparison(m, s, estimate, gib))


def table(e: dict, s: Setting, c: dict, ac: dict) -> list[str]:
    N, B = c["params"], s.batch
    lines = [f"## Per-GPU estimate: FSDP2 on {s.world} GPUs, batch {B}/GPU at {s.latent * 8} px, "
             f"N = {N:,}", "", "| piece | formula | bytes / GPU | GiB / GPU | source |", "|---|---|---|---|---|"]
    lines += [f"| {p} | {f} | {b:,.0f} | {gib(b)} | {k} |" for p, f, b, k in e["static"] + e["activations"]]
    lines += [
        f"| **activation peak** | boundaries + max(backward, teacher fwd, fake fwd); vs fake phase | "
        f"{e['peak_activations']:,.0f} | **{gib(e['peak_activations'])}** | derived |",
        f"| **total per GPU** | sum of the static rows + activation peak | {e['total']:,.0f} | "
        f"**{gib(e['total'])}** | |",
        f"| total, text embeddings precomputed (no encoders resident) | | {e['total_no_text']:,.0f} | "
        f"{gib(e['total_no_text'])} | |",
        f"| total with the trainer's bf16 autocast (CUDA policy; joint-block pieces re-measured) | | "
        f"{ac['total']:,.0f} | {gib(ac['total'])} | emulated |",
        f"| H100 80 GB (81,559 MiB) | | {H100_BYTES:,} | {gib(H100_BYTES)} | "
        f"headroom {gib(H100_BYTES - e['total'])} GiB |",
        "", "Assumptions: bf16 activations throughout (the FSDP2 MixedPrecisionPolicy casts parameters; "
        "PatchEmbed returns the conv's dtype, so the fp32 pos_embed buffer does not promote the residual "
        "stream), gradient checkpointing per transformer block (diffusers, non-reentrant), flash / "
        "cuDNN SDPA on the GPU (no L^2 attention matrix, as on the CPU here), activations linear in the "
        "batch (measured above). The student step keeps the student's checkpoint boundaries alive through "
        "the teacher and fake no_grad calls and its backward, so its peak is boundaries + the largest of "
        "those; the fake-teacher phase (B rows with grad) is smaller. Grads of both trainees persist "
        "between steps (zero_grad(set_to_none) runs just before each backward). Not on the peak path: "
        "AdamW step temporaries (~4 N / W), the text-encoder forward (before the student forward), the "
        "VAE (latents only). Teacher rows: the trainer answers every real-net query of the CDM losses in "
        "one batched call, CA cond + uncond (2B) + DM (B) + off-trajectory DM (B); with real CFG in the DM "
        f"losses it is 6B and the total {gib(e['total_real_cfg'])} GiB. Text encoders are assumed "
        "resident (the trainer encodes prompts every iteration). Allocator fragmentation is not "
        "included: keep ~10 % headroom.",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sd3_memory.md")
    ap.add_argument("--tiny", action="store_true", help="tiny config: a seconds-long check")
    args = ap.parse_args(argv)
    s = TINY_SETTING if args.tiny else REAL
    m = measure(s)
    e = estimate(m, s)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(m, e, s, argv if argv is not None else sys.argv[1:]) + "\n")
    print(f"{m['counts']['params']:,} parameters; total {gib(e['total'])} GiB per GPU -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
