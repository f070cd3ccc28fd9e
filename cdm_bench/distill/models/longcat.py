"""LongCat-Image as a distillation teacher: ``model.adapter: longcat``.

Conditions are ``{"encoder_hidden_states": (B, 512, D)}`` from the pipeline's own
``encode_prompt`` (Qwen2.5-VL hidden states with the prompt template stripped; prompt rewriting
is never used in training). Latents are the pipeline's packed ones, ``(B, (h/2)(w/2), 64)``.
The transformer takes 3-axis position ids (text: modality 0 from (0, 0); image: modality 1 from
(512, 512)), built here from the shapes with the pipeline's ``prepare_pos_ids`` and passed as
int64 so that FSDP2's bf16 input cast cannot round them (positions above 256 are not exact in
bf16). ``timestep = sigma`` (the transformer multiplies by 1000 itself). The scheduler shifts
dynamically (``mu`` from the image sequence length), read from its config. FSDP2 shards the
double- and single-stream blocks. Exported students load with the ``longcat-image`` generator.
"""

from __future__ import annotations

import torch
from torch import nn

from cdm_bench.distill.models.pipeline import PipelineAdapter


def _pipeline_module():
    from diffusers.pipelines.longcat_image import pipeline_longcat_image

    return pipeline_longcat_image


class LongCatAdapter(PipelineAdapter):
    name = "longcat"
    pipeline_class = "LongCatImagePipeline"
    transformer_class = "LongCatImageTransformer2DModel"
    generator = "longcat-image"
    default_pretrained = "meituan-longcat/LongCat-Image"
    block_classes = ("LongCatImageTransformerBlock", "LongCatImageSingleTransformerBlock")
    #: LoRA target layers (attention, feed-forward), the reference's (cdm/models/model_adapters.py)
    lora_targets = (("attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0",
                    "attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out"),
                    ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"))
    default_max_sequence_length = 512

    @property
    def pipe(self):
        pipe = super().pipe
        pipe.tokenizer_max_length = self.max_sequence_length
        return pipe

    # -- conditions ---------------------------------------------------------------------------------
    def _encode(self, prompts: list[str]) -> dict:
        embeds = self.pipe._encode_prompt(list(prompts))  # on the device of the pipeline's modules
        return {"encoder_hidden_states": embeds}

    def _grid(self) -> int:
        """Latent side before packing (the pipeline's rounding to a multiple of 2)."""
        return 2 * (self.resolution // (self.vae_scale_factor * 2))

    def _ids(self, text_tokens: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        prep = _pipeline_module().prepare_pos_ids
        side = self._grid() // 2
        txt = prep(modality_id=0, type="text", start=(0, 0), num_token=text_tokens)
        img = prep(modality_id=1, type="image", start=(self.max_sequence_length,) * 2, height=side, width=side)
        return txt.to(device, torch.int64), img.to(device, torch.int64)

    def forward(self, model: nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond: dict) -> torch.Tensor:
        dtype = self._model_dtype(model)
        emb = cond["encoder_hidden_states"]
        txt_ids, img_ids = self._ids(emb.shape[1], x.device)
        out = model(hidden_states=x.to(dtype), timestep=sigma.to(dtype), encoder_hidden_states=emb.to(dtype),
                    txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
        return out.float()

    # -- latents --------------------------------------------------------------------------------------
    def latent_shape(self, model: nn.Module) -> tuple[int, ...]:
        side = self._grid() // 2
        return (side * side, model.config.in_channels)

    def sample_noise(self, n: int, generator: torch.Generator, model: nn.Module) -> torch.Tensor:
        """As the pipeline draws it: (B, C, h, w) Gaussian noise, then packed 2x2."""
        channels = model.config.in_channels // 4
        noise = torch.randn((n, channels, self._grid(), self._grid()), generator=generator)
        return self.pipe._pack_latents(noise, n, channels, self._grid(), self._grid())

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = self.pipe._unpack_latents(latents, self.resolution, self.resolution, self.vae_scale_factor)
        return self._vae_decode(z)

    def _mu(self) -> float:
        cfg = self.scheduler.config
        seq = (self._grid() // 2) ** 2
        return _pipeline_module().calculate_shift(seq, cfg.get("base_image_seq_len", 256),
                                                  cfg.get("max_image_seq_len", 4096),
                                                  cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))
