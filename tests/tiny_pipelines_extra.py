"""More tiny *real* diffusers pipelines built from configs in-process and saved in the published
layout (nothing is downloaded): FLUX.1, PixArt-Sigma and SDXL. Random weights, deterministic for a
seed; the style follows tests/tiny_pipelines.py (whose tokenizer helpers are reused).

    save_tiny_flux(folder, seed=0) -> folder     # FluxPipeline, 32 px images
    save_tiny_pixart(folder, seed=0) -> folder   # PixArtSigmaPipeline, 32 px images (see below)
    save_tiny_sdxl(folder, seed=0) -> folder     # StableDiffusionXLPipeline, 32 px images

Every tokenizer is written here and its length asserted after loading it back from the folder.

Sizes that have to agree (checked by the pipelines or the models at call time):

* Flux: ``joint_attention_dim`` == T5 ``d_model``; ``pooled_projection_dim`` == CLIPTextModel
  ``hidden_size`` (Flux pools CLIP's ``pooler_output``, not a projection); ``in_channels`` == 4 x VAE
  latent channels (2x2 packing); ``sum(axes_dims_rope)`` == ``attention_head_dim``; the image side must
  be divisible by 2 x the VAE scale factor. ``guidance_embeds=True`` so ``guidance_scale`` (distilled
  guidance) is an input; real CFG is ``true_cfg_scale > 1`` plus a ``negative_prompt``.
* PixArt-Sigma: ``caption_channels`` == T5 ``d_model``; ``out_channels`` == 2 x ``in_channels`` (learned
  sigma, as published). ``use_resolution_binning`` (on by default) only knows ``sample_size`` 32/64/
  128/256 and snaps to >= 256 px bins, so call the tiny pipeline with ``use_resolution_binning=False``
  (and ``clean_caption=False``: bs4 is not installed); its default size is ``sample_size`` x VAE scale
  = 32 px.
* SDXL: ``cross_attention_dim`` == hidden(text_encoder) + hidden(text_encoder_2) (the penultimate
  hidden states are concatenated); ``projection_class_embeddings_input_dim`` == text_encoder_2
  ``projection_dim`` + 6 x ``addition_time_embed_dim``. Saved with ``add_watermarker=False``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "metrics"))

import cdm_bench  # noqa: E402,F401  (installs the torchvision compat hook before transformers imports it)
from clip_fixtures import write_tokenizer  # noqa: E402
from tiny_pipelines import _eval, _t5_tokenizer  # noqa: E402

__all__ = ["save_tiny_flux", "save_tiny_pixart", "save_tiny_sdxl",
           "FLUX_SCHEDULER", "PIXART_SIGMA_SCHEDULER", "SDXL_SCHEDULER"]

#: black-forest-labs/FLUX.1-dev scheduler/scheduler_config.json (FlowMatchEulerDiscreteScheduler)
FLUX_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True,
                  "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096}
#: PixArt-alpha/PixArt-Sigma-XL-2-1024-MS scheduler (DPMSolverMultistepScheduler, epsilon, linear betas)
PIXART_SIGMA_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
                          "beta_schedule": "linear", "prediction_type": "epsilon", "solver_order": 2,
                          "algorithm_type": "dpmsolver++", "solver_type": "midpoint", "lower_order_final": True,
                          "use_karras_sigmas": False, "timestep_spacing": "linspace", "steps_offset": 0}
#: stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json (EulerDiscreteScheduler)
SDXL_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "interpolation_type": "linear",
                  "use_karras_sigmas": False, "timestep_spacing": "leading", "steps_offset": 1}

T5_DIM = 32


def _clip(folder: Path, seed: int, hidden: int, proj: int, with_projection: bool):
    """A 2-layer CLIP text encoder (CLIPTextModel or ...WithProjection) + its tokenizer from ``folder``."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    size = write_tokenizer(folder)
    tok = CLIPTokenizer.from_pretrained(folder)
    assert len(tok) == size, f"CLIP tokenizer has {len(tok)} entries, expected {size}"
    assert tok.model_max_length == 77, tok.model_max_length
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    config = CLIPTextConfig(vocab_size=size, hidden_size=hidden, intermediate_size=2 * hidden,
                            num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                            projection_dim=proj, eos_token_id=eos, pad_token_id=eos,
                            bos_token_id=tok.convert_tokens_to_ids("<|startoftext|>"), hidden_act="gelu")
    torch.manual_seed(seed)
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(config).eval(), tok


def _t5(folder: Path, seed: int, d_model: int = T5_DIM):
    import torch
    from transformers import T5Config, T5EncoderModel

    tok, size = _t5_tokenizer(folder)
    torch.manual_seed(seed)
    model = T5EncoderModel(T5Config(vocab_size=size, d_model=d_model, d_ff=2 * d_model, d_kv=8, num_layers=2,
                                    num_heads=2, relative_attention_num_buckets=8, dropout_rate=0.0,
                                    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)).eval()
    return model, tok


def _vae(seed: int, latent_channels: int, scaling_factor: float, shift_factor: float | None,
         quant_conv: bool, blocks: int = 2, width: int = 8):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    chans = [width * 2 ** i for i in range(blocks)]
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * blocks,
                         up_block_types=["UpDecoderBlock2D"] * blocks, block_out_channels=chans,
                         layers_per_block=1, latent_channels=latent_channels, norm_num_groups=min(chans),
                         use_quant_conv=quant_conv, use_post_quant_conv=quant_conv, shift_factor=shift_factor,
                         scaling_factor=scaling_factor, sample_size=32).eval()


# --------------------------------------------------------------------------------------------
# FLUX.1
# --------------------------------------------------------------------------------------------

def save_tiny_flux(folder: Path, seed: int = 0) -> Path:
    """Save a tiny FluxPipeline (guidance-distilled transformer, 32 px images) into ``folder``.

    The CLIP tokenizer (77 tokens) feeds the pooled vector, T5 (padded to ``max_sequence_length``,
    512 by default) the token sequence; 32 px -> 16x16 latents -> 8x8 = 64 packed image tokens."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    folder = Path(folder)
    clip_hidden = 16
    te1, tok1 = _clip(folder / "tokenizer", seed + 1, clip_hidden, clip_hidden, with_projection=False)
    te2, tok2 = _t5(folder / "tokenizer_2", seed + 2)
    vae = _vae(seed + 4, latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159, quant_conv=False)
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4 * vae.config.latent_channels, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=te2.config.d_model,
        pooled_projection_dim=te1.config.hidden_size, guidance_embeds=True, axes_dims_rope=[4, 6, 6]).eval()
    assert sum(transformer.config.axes_dims_rope) == transformer.config.attention_head_dim
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER), vae=vae,
                        text_encoder=te1, tokenizer=tok1, text_encoder_2=te2, tokenizer_2=tok2,
                        transformer=transformer)
    _eval(pipe.transformer, pipe.vae, te1, te2)
    pipe.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------------------------
# PixArt-Sigma
# --------------------------------------------------------------------------------------------

def save_tiny_pixart(folder: Path, seed: int = 0) -> Path:
    """Save a tiny PixArtSigmaPipeline (32 px images) into ``folder``.

    Call it with ``use_resolution_binning=False`` (the bins are for sample sizes 32..256 latents,
    i.e. >= 256 px images) and ``clean_caption=False``; T5 text is padded to 300 tokens."""
    import torch
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    folder = Path(folder)
    te, tok = _t5(folder / "tokenizer", seed + 1)
    vae = _vae(seed + 4, latent_channels=4, scaling_factor=0.13025, shift_factor=None, quant_conv=True)
    vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
    torch.manual_seed(seed)
    transformer = PixArtTransformer2DModel(
        sample_size=32 // vae_scale, num_layers=1, patch_size=2, attention_head_dim=8, num_attention_heads=2,
        in_channels=vae.config.latent_channels, out_channels=2 * vae.config.latent_channels,
        cross_attention_dim=16, caption_channels=te.config.d_model, norm_num_groups=1,
        interpolation_scale=1, use_additional_conditions=False).eval()
    pipe = PixArtSigmaPipeline(tokenizer=tok, text_encoder=te, vae=vae, transformer=transformer,
                               scheduler=DPMSolverMultistepScheduler(**PIXART_SIGMA_SCHEDULER))
    _eval(pipe.transformer, pipe.vae, te)
    pipe.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------------------------
# Stable Diffusion XL
# --------------------------------------------------------------------------------------------

def save_tiny_sdxl(folder: Path, seed: int = 0) -> Path:
    """Save a tiny StableDiffusionXLPipeline (32 px images, ``add_watermarker=False``) into ``folder``."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    folder = Path(folder)
    hidden1, hidden2, proj2, time_dim = 16, 16, 16, 8
    te1, tok1 = _clip(folder / "tokenizer", seed + 1, hidden1, hidden1, with_projection=False)
    te2, tok2 = _clip(folder / "tokenizer_2", seed + 2, hidden2, proj2, with_projection=True)
    vae = _vae(seed + 4, latent_channels=4, scaling_factor=0.13025, shift_factor=None, quant_conv=True)
    vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=32 // vae_scale, in_channels=4, out_channels=4, block_out_channels=(16, 32),
        layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 1), use_linear_projection=True, norm_num_groups=8,
        cross_attention_dim=hidden1 + hidden2, addition_embed_type="text_time",
        addition_time_embed_dim=time_dim, projection_class_embeddings_input_dim=proj2 + 6 * time_dim).eval()
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok1,
                                     tokenizer_2=tok2, unet=unet, scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER),
                                     add_watermarker=False)
    _eval(pipe.unet, pipe.vae, te1, te2)
    pipe.save_pretrained(folder)
    return folder
