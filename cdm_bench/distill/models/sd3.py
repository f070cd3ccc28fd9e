"""Stable Diffusion 3 (Medium) as a distillation teacher: ``model.adapter: sd3``.

Conditions are ``{"encoder_hidden_states": (B, 77 + T5 tokens, 4096), "pooled_projections":
(B, 2048)}`` from the pipeline's own ``encode_prompt`` (CLIP-L + CLIP-G, and T5 when present;
a pipeline saved without T5 is loaded with ``pretrained_kwargs: {text_encoder_3: null,
tokenizer_3: null}`` and gets SD3's zero T5 embeddings). The transformer is called as the
pipeline calls it: ``timestep = sigma * 1000``, output the flow velocity ``eps - x0``. The
scheduler's shift (3.0 for SD3-Medium) is read from its config. FSDP2 shards each
``JointTransformerBlock``. Exported students load with the ``sd3-medium`` generator.
"""

from __future__ import annotations

from types import SimpleNamespace
import torch
from torch import nn

from cdm_bench.distill.models.pipeline import PipelineAdapter


class SD3Adapter(PipelineAdapter):
    name = "sd3"
    pipeline_class = "StableDiffusion3Pipeline"
    transformer_class = "SD3Transformer2DModel"
    generator = "sd3-medium"
    default_pretrained = "stabilityai/stable-diffusion-3-medium-diffusers"
    block_classes = ("JointTransformerBlock",)
    #: LoRA target layers (attention, feed-forward), the reference's (cdm/models/model_adapters.py)
    lora_targets = (("attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out",
                    "attn.to_k", "attn.to_out.0", "attn.to_q", "attn.to_v"),
                    ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"))
    default_max_sequence_length = 256

    def _encode(self, prompts: list[str]) -> dict:
        pipe = self.pipe
        if pipe.text_encoder_3 is None and getattr(pipe, "transformer", None) is None:
            # SD3 makes zero T5 embeddings of the transformer's width; it only needs its config
            config = SimpleNamespace(**self.teacher_spec()["config"])
            object.__setattr__(pipe, "transformer", SimpleNamespace(config=config))
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=prompts, prompt_2=prompts, prompt_3=prompts, device=self.device,
            do_classifier_free_guidance=False, max_sequence_length=self.max_sequence_length)
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled}

    def forward(self, model: nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond: dict) -> torch.Tensor:
        dtype = self._model_dtype(model)
        out = model(hidden_states=x.to(dtype), timestep=(sigma * 1000.0).to(dtype),
                    encoder_hidden_states=cond["encoder_hidden_states"].to(dtype),
                    pooled_projections=cond["pooled_projections"].to(dtype), return_dict=False)[0]
        return out.float()

    def latent_shape(self, model: nn.Module) -> tuple[int, ...]:
        side = self.resolution // self.vae_scale_factor
        return (model.config.in_channels, side, side)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self._vae_decode(latents)
