"""SD3-Medium at real size, random weights: 1024 px latency and peak GPU memory, student vs teacher.

    python benchmarks/sd3_gpu_latency.py --out benchmarks/results/sd3_gpu_latency.md      (one GPU)
    python benchmarks/sd3_gpu_latency.py --no-t5 ...        (skip T5-XXL: zeros for its tokens)
    python benchmarks/sd3_gpu_latency.py --device cpu --tiny --out /tmp/lat.md           (seconds)

Builds a StableDiffusion3Pipeline from the published configs (stabilityai/stable-diffusion-3-medium-
diffusers: transformer, AutoencoderKL with 16 latent channels, CLIP-L, CLIP-G, T5-XXL encoder,
FlowMatchEulerDiscreteScheduler shift 3.0) with every module built on the meta device and its
parameters created once on the target device in bf16 (seeded normal(0, 0.02); norm weights 1,
biases 0). Nothing is downloaded: the tokenizers are word-level stand-ins with the real special
tokens and lengths (77 CLIP tokens, 256 T5 tokens), so the networks see the same shapes. For
each generator it runs ``--warmup`` untimed and ``--repeats`` timed calls (``torch.cuda.synchronize``
around each; prompt encoding, denoising and VAE decode, ``output_type="pt"``) and records
``torch.cuda.max_memory_allocated`` over the timed calls. Generators: the 4-NFE student (guidance
1.0, sigmas [1.0, 0.75, 0.5, 0.25]) and the teacher at 28 and 50 steps with CFG 4.5.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import cdm_bench  # noqa: E402,F401  (torchvision shim, before diffusers imports transformers)

SD3_MEDIUM = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                  num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                  pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192)
TINY = dict(sample_size=16, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8,
            num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16,
            pooled_projection_dim=32, out_channels=4, pos_embed_max_size=16)
SD3_VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
               up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512],
               layers_per_block=2, act_fn="silu", latent_channels=16, norm_num_groups=32, sample_size=1024,
               scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False,
               force_upcast=True)
TINY_VAE = {**SD3_VAE, "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2,
            "block_out_channels": [8, 8], "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 4,
            "sample_size": 32}
SCHEDULER = dict(num_train_timesteps=1000, shift=3.0)
GENERATORS = [  # name, steps, guidance, sigmas
    ("student-4nfe", 4, 1.0, [1.0, 0.75, 0.5, 0.25]),
    ("teacher-28-cfg4.5", 28, 4.5, None),
    ("teacher-50-cfg4.5", 50, 4.5, None),
]
PROMPT = "a photograph of an astronaut riding a horse on the moon, detailed, 35mm"


def text_encoder_configs(tiny: bool = False) -> dict:
    """name -> (kind, config): SD3-Medium's text_encoder (CLIP-L), text_encoder_2 (CLIP-G), text_encoder_3."""
    from transformers import CLIPTextConfig, T5Config

    clip = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=0, eos_token_id=2, pad_token_id=1,
                layer_norm_eps=1e-5)
    if tiny:
        small = {**clip, "vocab_size": 1000, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2}
        return {"clip_l": ("clip", CLIPTextConfig(**small, hidden_size=8, projection_dim=16, hidden_act="quick_gelu")),
                "clip_g": ("clip", CLIPTextConfig(**small, hidden_size=8, projection_dim=16, hidden_act="gelu")),
                "t5_xxl": ("t5", T5Config(vocab_size=1000, d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2,
                                          feed_forward_proj="gated-gelu", is_encoder_decoder=False))}
    return {
        "clip_l": ("clip", CLIPTextConfig(**clip, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                          num_attention_heads=12, projection_dim=768, hidden_act="quick_gelu")),
        "clip_g": ("clip", CLIPTextConfig(**clip, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                          num_attention_heads=20, projection_dim=1280, hidden_act="gelu")),
        "t5_xxl": ("t5", T5Config(vocab_size=32128, d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24,
                                  relative_attention_num_buckets=32, relative_attention_max_distance=128,
                                  feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, dropout_rate=0.1,
                                  tie_word_embeddings=False, is_encoder_decoder=False)),
    }


def materialise_(model: torch.nn.Module, device, dtype=torch.bfloat16, seed: int = 0) -> torch.nn.Module:
    """Give every meta parameter real storage on ``device`` once: normal(0, 0.02) for matrices and
    convolutions, 1 for 1-D ``weight`` (norms), 0 for biases; floating buffers cast to ``dtype``."""
    gen, made = torch.Generator(device=device).manual_seed(seed), {}
    for name, p in list(model.named_parameters(remove_duplicate=False)):
        owner, _, attr = name.rpartition(".")
        if id(p) not in made:  # tied weights (T5's shared embedding) stay tied
            value = torch.empty(p.shape, dtype=dtype, device=device)
            if value.ndim >= 2:
                value.normal_(0.0, 0.02, generator=gen)
            else:
                value.fill_(1.0 if attr == "weight" else 0.0)
            made[id(p)] = torch.nn.Parameter(value, requires_grad=False)
        model.get_submodule(owner)._parameters[attr] = made[id(p)]
    for name, b in list(model.named_buffers()):
        owner, _, attr = name.rpartition(".")
        model.get_submodule(owner)._buffers[attr] = b.to(device, dtype if b.is_floating_point() else b.dtype)
    return model.eval()


def build(cls, *args, device, dtype, seed, **kwargs):
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = cls(*args, **kwargs)
    if hasattr(model, "tie_weights"):
        model.tie_weights()  # transformers ties in post_init, which the meta re-registration undoes
    return materialise_(model, device, dtype, seed)


def meta_model(cls, *args, **kwargs):
    """``cls`` with every parameter on the meta device (ties restored)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = cls(*args, **kwargs)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model


def word_tokenizer(kind: str, max_length: int, vocab_size: int):
    """A stand-in tokenizer (no download): word-level over a synthetic vocabulary, with the real
    special tokens, padding and length; CLIP: BOS ... EOS, pad to 77; T5: ... </s>, pad to 256."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if kind == "clip":
        special = {"<|startoftext|>": vocab_size - 2, "<|endoftext|>": vocab_size - 1, "!": 0}
        bos, eos, pad, unk = "<|startoftext|>", "<|endoftext|>", "<|endoftext|>", "<|endoftext|>"
    else:
        special, bos, eos, pad, unk = {"<pad>": 0, "</s>": 1, "<unk>": 2}, None, "</s>", "<pad>", "<unk>"
    vocab = {f"w{i}": i for i in range(vocab_size) if i not in special.values()}
    vocab.update(special)
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    single = f"{bos} $A {eos}" if bos else f"$A {eos}"
    tok.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[(t, vocab[t]) for t in (bos, eos) if t])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   unk_token=unk, model_max_length=max_length)


def build_pipeline(tiny: bool, device: str, dtype=torch.bfloat16, t5: bool = True):
    from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel,
                           StableDiffusion3Pipeline)
    from transformers import CLIPTextModelWithProjection, T5EncoderModel

    kw = dict(device=device, dtype=dtype)
    cfgs = text_encoder_configs(tiny)
    parts = dict(transformer=build(SD3Transformer2DModel, **(TINY if tiny else SD3_MEDIUM), seed=0, **kw),
                 vae=build(AutoencoderKL, **(TINY_VAE if tiny else SD3_VAE), seed=1, **kw),
                 scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER),
                 text_encoder=build(CLIPTextModelWithProjection, cfgs["clip_l"][1], seed=2, **kw),
                 text_encoder_2=build(CLIPTextModelWithProjection, cfgs["clip_g"][1], seed=3, **kw),
                 tokenizer=word_tokenizer("clip", 77, cfgs["clip_l"][1].vocab_size),
                 tokenizer_2=word_tokenizer("clip", 77, cfgs["clip_g"][1].vocab_size),
                 text_encoder_3=None, tokenizer_3=None)
    if t5:
        parts["text_encoder_3"] = build(T5EncoderModel, cfgs["t5_xxl"][1], seed=4, **kw)
        parts["tokenizer_3"] = word_tokenizer("t5", 256, cfgs["t5_xxl"][1].vocab_size)
    pipe = StableDiffusion3Pipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_generator(pipe, device: str, steps: int, guidance: float, sigmas, size: int, warmup: int,
                   repeats: int, max_seq: int) -> dict:
    cuda = device.startswith("cuda")
    call = dict(prompt=PROMPT, height=size, width=size, guidance_scale=guidance, output_type="pt",
                max_sequence_length=max_seq)
    call.update(sigmas=sigmas) if sigmas else call.update(num_inference_steps=steps)
    for i in range(warmup):
        pipe(**call, generator=torch.Generator(device).manual_seed(i))
    if cuda:
        sync(device)
        torch.cuda.reset_peak_memory_stats()
    times, image = [], None
    for i in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        image = pipe(**call, generator=torch.Generator(device).manual_seed(100 + i)).images
        sync(device)
        times.append(time.perf_counter() - t0)
    nfe = len(sigmas or range(steps)) * (2 if guidance > 1.0 else 1)
    return {"steps": len(sigmas or range(steps)), "guidance": guidance, "nfe": nfe, "times": times,
            "mean": statistics.mean(times), "std": statistics.pstdev(times), "min": min(times),
            "peak": torch.cuda.max_memory_allocated() if cuda else None,
            "finite": bool(torch.isfinite(torch.as_tensor(image).float()).all()), "shape": tuple(image.shape)}


def describe_device(device: str) -> str:
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(torch.device(device))
        return f"{p.name}, {p.total_memory / 2**30:.1f} GiB, CUDA {torch.version.cuda}"
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def report(rows: dict, args, weights: int, load_s: float, argv: list[str]) -> str:
    gib = lambda b: "n/a (cpu)" if b is None else f"{b / 2**30:.2f}"  # noqa: E731
    size, tag = (64, " (TINY smoke run)") if args.tiny else (1024, "")
    lines = [f"# SD3-Medium {size} px latency and peak memory, random weights{tag}",
             "", f"Command: `python benchmarks/sd3_gpu_latency.py {' '.join(argv)}`  ",
             f"Date: {datetime.date.today().isoformat()}; device: {describe_device(args.device)}; torch "
             f"{torch.__version__}; bf16; T5-XXL {'on' if not args.no_t5 else 'off (zeros)'}; {size} px; "
             f"warm-up {args.warmup}, repeats {args.repeats}", "",
             f"Weights resident (memory_allocated after building, GiB): {gib(weights)}; build {load_s:.1f} s.", "",
             "| generator | steps | guidance | NFE | latency mean (s) | std (s) | min (s) | peak allocated (GiB) "
             "| finite |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['steps']} | {r['guidance']} | {r['nfe']} | {r['mean']:.3f} | {r['std']:.3f} | "
                     f"{r['min']:.3f} | {gib(r['peak'])} | {r['finite']} |")
    student, teachers = rows.get("student-4nfe"), [k for k in rows if k.startswith("teacher")]
    if student:
        lines += [""] + [f"Speed-up of the student over {k}: {rows[k]['mean'] / student['mean']:.1f}x"
                         for k in teachers]
    encoders = "CLIP-L, CLIP-G" + ("" if args.no_t5 else ", T5-XXL")
    lines += ["", f"Latency covers prompt encoding ({encoders}), the denoising loop and the VAE decode to a "
              "tensor (no PIL conversion). Random weights change no shapes, so time and memory match the real "
              "checkpoints up to data-dependent kernels (none in this pipeline)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sd3_gpu_latency.md")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny configs, 64 px: a seconds-long smoke run")
    ap.add_argument("--no-t5", action="store_true", help="skip T5-XXL (the pipeline feeds zeros for its tokens)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="generator names to run (default: all)")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("no CUDA device; use --device cpu --tiny for the smoke run")
    t0 = time.perf_counter()
    pipe = build_pipeline(args.tiny, args.device, t5=not args.no_t5)
    sync(args.device)
    load_s = time.perf_counter() - t0
    weights = torch.cuda.memory_allocated() if args.device.startswith("cuda") else None
    rows = {}
    for name, steps, guidance, sigmas in GENERATORS:
        if args.only and name not in args.only:
            continue
        rows[name] = time_generator(pipe, args.device, steps, guidance, sigmas, 64 if args.tiny else 1024,
                                    args.warmup, args.repeats, 16 if args.tiny else 256)
        print(f"{name}: {rows[name]['mean']:.3f} s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(rows, args, weights, load_s, argv if argv is not None else sys.argv[1:]))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
