"""The public few-step SD3-Medium models the paper compares with, as named generators (facts from
the reference code's model adapters, ``cdm/models/model_adapters.py``). Each is an
:class:`~cdm_bench.generators.named.SD3MediumGenerator` with LoRA / scheduler / VAE swaps as
defaults; every one can be overridden in the spec (a local ``path`` for each file, ``scale``, ...).

================  =====================================================================  =====  ========
registry name     what                                                                   nfe    guidance
================  =====================================================================  =====  ========
sd3-hypersd       + ByteDance/Hyper-SD ``Hyper-SD3-8steps-CFG-lora.safetensors``, fused   8      5.0
                  at scale 0.125
sd3-tdm           + Luo-Yihong/TDM_sd3_lora as adapter ``tdm`` at 0.125 (not fused), VAE  4      1.0
                  madebyollin/taesd3 (AutoencoderTiny, shift_factor 0), scheduler
                  DPMSolverMultistep from Sana_1600M_1024px_BF16_diffusers, flow_shift 6
sd3-flash         + the peft adapter jasperai/flash-sd3, FlashFlowMatchEulerDiscrete-     4      0.0
                  Scheduler from the base's scheduler config, no T5
================  =====================================================================  =====  ========

FlashFlowMatchEulerDiscreteScheduler is not in stock diffusers (0.42): ``sd3-flash`` needs a
diffusers build that has it, or ``scheduler: {class: module:Class}`` naming an implementation.
"""

from __future__ import annotations

from cdm_bench.generators.named import SD3MediumGenerator

HYPER_SD = {"path": "ByteDance/Hyper-SD", "weight_name": "Hyper-SD3-8steps-CFG-lora.safetensors", "scale": 0.125,
            "adapter_name": "hypersd", "fuse": True}
TDM = {"path": "Luo-Yihong/TDM_sd3_lora", "scale": 0.125, "adapter_name": "tdm", "fuse": False}
TDM_VAE = {"class": "AutoencoderTiny", "path": "madebyollin/taesd3", "config": {"shift_factor": 0.0}}
TDM_SCHEDULER = {"class": "DPMSolverMultistepScheduler", "from": "Efficient-Large-Model/Sana_1600M_1024px_BF16_diffusers",
                 "subfolder": "scheduler", "config": {"flow_shift": 6}}
FLASH = {"path": "jasperai/flash-sd3", "format": "peft", "scale": 1.0, "adapter_name": "flash", "fuse": False}


class SD3HyperSDGenerator(SD3MediumGenerator):
    """SD3-Medium + the Hyper-SD 8-step CFG LoRA (fused at 0.125)."""

    recipe = "hyper-sd"
    defaults = {**SD3MediumGenerator.defaults, "nfe": 8, "guidance": 5.0, "lora": [HYPER_SD]}


class SD3TDMGenerator(SD3MediumGenerator):
    """SD3-Medium + the TDM LoRA, the tiny SD3 autoencoder and DPM-Solver (flow shift 6)."""

    recipe = "tdm"
    defaults = {**SD3MediumGenerator.defaults, "nfe": 4, "guidance": 1.0, "lora": [TDM], "vae": TDM_VAE,
                "scheduler": TDM_SCHEDULER}


class SD3FlashGenerator(SD3MediumGenerator):
    """SD3-Medium + the Flash-SD3 peft adapter and its scheduler, without T5."""

    recipe = "flash"
    defaults = {**SD3MediumGenerator.defaults, "nfe": 4, "guidance": 0.0, "lora": [FLASH],
                "scheduler": {"class": "FlashFlowMatchEulerDiscreteScheduler"},
                "pretrained_kwargs": {"text_encoder_3": None, "tokenizer_3": None}}
