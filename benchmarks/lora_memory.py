"""The LoRA recipe's per-GPU memory beside the full one (sd3_memory.py's measured pieces).

LoRA (the reference's values: rank 64, alpha 128, attention + FFN projections of every joint
block): one frozen bf16 base serves the teacher (adapters off), the student and the fake teacher
(one adapter each); only the adapters have fp32 weights, grads, AdamW moments and an EMA. The
activations are the full recipe's: the student's backward still runs through the base.
"""

from __future__ import annotations

from dataclasses import replace

#: the reference's target modules (cdm/models/model_adapters.py SD3_LORA_TARGET_MODULES + _FF_MODULES)
SD3_ATTN = ("attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out", "attn.to_k", "attn.to_out.0",
            "attn.to_q", "attn.to_v")
SD3_FFN = ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")
RANK = 64


def lora_counts(model, rank: int = RANK, targets=SD3_ATTN + SD3_FFN) -> dict:
    """Adapter parameters r * (in + out) per targeted Linear: in total and the largest block's."""
    from torch import nn

    def count(module) -> int:
        return sum(rank * (m.in_features + m.out_features) for name, m in module.named_modules()
                   if isinstance(m, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets))

    return {"lora_params": count(model), "lora_block_params": max(count(b) for b in model.transformer_blocks),
            "lora_rank": rank}


def estimate_lora(m: dict, s, full: dict) -> dict:
    """The full estimate's rows with the trainees' state replaced by adapters on one frozen base."""
    c = m["counts"]
    N, NL, W = c["params"], c["lora_params"], s.world
    static = [
        ("frozen base (teacher = adapters off; student and fake = its adapters): bf16 params (sharded)", "2 N / W",
         2 * N / W, "derived"),
        ("student adapters: fp32 params + grads + AdamW m, v (sharded)", "16 N_L / W", 16 * NL / W, "derived"),
        ("fake-teacher adapters: same", "16 N_L / W", 16 * NL / W, "derived"),
        ("student EMA: the adapters only, fp32", "4 N_L / W", 4 * NL / W, "derived"),
        ("buffers (pos_embed): the base's bf16 copy", "buf_bf16", c["buffer_bytes"], "measured buf"),
        ("FSDP2 all-gather: 2 blocks bf16 + 3 roots bf16 (adapters included)", "2 * 2 (P_blk + L_blk) + 3 * 2 P_root",
         4 * (c["block_params"] + c["lora_block_params"]) + 6 * c["non_block_params"], "derived"),
        ("FSDP2 backward: unsharded adapter grads of a block (bf16 + fp32 reduce-scatter)", "(2 + 4) L_blk",
         6 * c["lora_block_params"], "derived"),
    ]
    keep = [r for r in full["static"] if r[0].startswith(("text encoders", "CUDA context"))]
    static += keep
    base = sum(r[2] for r in static)
    return {"static": static, "activations": full["activations"], "peak_activations": full["peak_activations"],
            "total": base + full["peak_activations"],
            "total_no_text": base - full["text_bytes"] + full["peak_activations"]}


def comparison(m: dict, s, estimate, gib, worlds=(1, 2, 8)) -> list[str]:
    """Markdown: full vs LoRA per GPU at ``worlds`` GPUs, batch s.batch per GPU."""
    c = m["counts"]
    lines = [f"## LoRA recipe vs full: per GPU at 1, 2 and 8 GPUs (batch {s.batch}/GPU, {s.latent * 8} px)", "",
             f"LoRA: rank {c['lora_rank']} on the attention and FFN projections of every block (the reference's "
             f"targets), N_L = {c['lora_params']:,} adapter parameters per adapter "
             f"({100 * c['lora_params'] / c['params']:.1f} % of N); one frozen bf16 base for teacher, student and "
             "fake teacher. Activations as in the full recipe.", "",
             "| GPUs | full: total | full: embeddings precomputed | LoRA: total | LoRA: embeddings precomputed | "
             "LoRA static (no activations, no text encoders) |", "|---|---|---|---|---|---|"]
    for w in worlds:
        sw = replace(s, world=w)
        full = estimate(m, sw)
        lo = estimate_lora(m, sw, full)
        static = sum(r[2] for r in lo["static"] if not r[0].startswith(("text encoders",)))
        lines.append(f"| {w} | {gib(full['total'])} GiB | {gib(full['total_no_text'])} GiB | {gib(lo['total'])} GiB | "
                     f"{gib(lo['total_no_text'])} GiB | {gib(static)} GiB |")
    lines += ["", "LoRA rows at 8 GPUs:", "", "| piece | formula | bytes / GPU | GiB / GPU | source |",
              "|---|---|---|---|---|"]
    lo8 = estimate_lora(m, replace(s, world=8), estimate(m, replace(s, world=8)))
    lines += [f"| {p} | {f} | {b:,.0f} | {gib(b)} | {k} |" for p, f, b, k in lo8["static"]]
    return lines
