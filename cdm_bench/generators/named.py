"""The paper's models as named generators: the SD3-Medium and LongCat-Image teachers and the
released 4-NFE CDM students. Each is a :class:`DiffusersGenerator` with its pipeline class and
defaults; every default can be overridden in the spec (``nfe: 50``, ``model: DIR``, ...).

=====================  ==========================================  =====  ========  ==========================
registry name          default ``model``                           nfe    guidance  sigmas
=====================  ==========================================  =====  ========  ==========================
sd3-medium             stabilityai/stable-diffusion-3-medium-       28     4.5       scheduler's own (shift 3)
                       diffusers
sd3-medium-turbo       byliutao/stable-diffusion-3-medium-turbo    4      1.0       [1.0, 0.75, 0.5, 0.25]
longcat-image          meituan-longcat/LongCat-Image               50     4.5       scheduler's own
longcat-image-turbo    byliutao/Longcat-Image-Turbo                4      1.0       [1.0, 0.75, 0.5, 0.25]
=====================  ==========================================  =====  ========  ==========================

All default to ``resolution: 1024`` (the paper's). The SD3 teacher's 28 steps are the model
card's and the reference code's fallback; the paper's teacher row is 50 steps x CFG 4.5 (100 NFE):
``{generator: sd3-medium, nfe: 50}``. The LongCat teacher follows the reference code
(50 x 4.5, the pipeline's CFG renorm on). LongCat's prompt rewrite (a Qwen2.5-VL generation pass
that rewrites every prompt) is off, as in the reference inference and evaluation:
``enable_prompt_rewrite: true`` turns it on. The turbo sigmas are the ones the reference
inference passes; the scheduler shifts them (SD3's shift 3 gives [1.0, 0.9, 0.75, 0.5]) and the
shifted values are recorded in ``generation.json``.
"""

from __future__ import annotations

from cdm_bench.errors import SpecError
from cdm_bench.generators.diffusers_generic import DiffusersGenerator

TURBO_SIGMAS = [1.0, 0.75, 0.5, 0.25]


class SD3MediumGenerator(DiffusersGenerator):
    """Stable Diffusion 3 Medium (``StableDiffusion3Pipeline``), the paper's SD3 teacher."""

    recipe = "teacher"
    pipeline_class = "StableDiffusion3Pipeline"
    transformer_class = "SD3Transformer2DModel"
    defaults = {"model": "stabilityai/stable-diffusion-3-medium-diffusers", "nfe": 28, "guidance": 4.5,
                "resolution": 1024, "dtype": "auto", "offload": "none"}


class SD3MediumTurboGenerator(SD3MediumGenerator):
    """The released 4-NFE CDM student of SD3-Medium."""

    recipe = "cdm"
    defaults = {**SD3MediumGenerator.defaults, "model": "byliutao/stable-diffusion-3-medium-turbo",
                "nfe": 4, "guidance": 1.0, "sigmas": TURBO_SIGMAS}


class LongCatImageGenerator(DiffusersGenerator):
    """LongCat-Image (``LongCatImagePipeline``), the paper's second teacher."""

    recipe = "teacher"
    pipeline_class = "LongCatImagePipeline"
    transformer_class = "LongCatImageTransformer2DModel"
    defaults = {"model": "meituan-longcat/LongCat-Image", "nfe": 50, "guidance": 4.5, "resolution": 1024,
                "dtype": "auto", "offload": "none"}

    def __init__(self, model: str | None = None, transformer: str | None = None, nfe: int | None = None,
                 guidance: float | None = None, sigmas: list | None = ..., resolution: int | None = None,
                 dtype: str | None = None, device: str | None = None, offload: str | None = None,
                 attention_backend: str | None = None, pretrained_kwargs: dict | None = None,
                 call_kwargs: dict | None = None, micro_batch: int | None = None, lora: list | dict | None = None,
                 scheduler: dict | str | None = None, vae: dict | None = None, enable_prompt_rewrite: bool = False):
        if not isinstance(enable_prompt_rewrite, bool):
            raise SpecError(f"enable_prompt_rewrite must be true or false, got {enable_prompt_rewrite!r}")
        if "enable_prompt_rewrite" in (call_kwargs or {}):
            raise SpecError("set enable_prompt_rewrite as a spec key, not in call_kwargs")
        self.enable_prompt_rewrite = enable_prompt_rewrite
        super().__init__(model=model, transformer=transformer, nfe=nfe, guidance=guidance, sigmas=sigmas,
                         resolution=resolution, dtype=dtype, device=device, offload=offload,
                         attention_backend=attention_backend, pretrained_kwargs=pretrained_kwargs,
                         call_kwargs=call_kwargs, micro_batch=micro_batch, lora=lora, scheduler=scheduler, vae=vae)

    def all_call_kwargs(self) -> dict:
        return {**self.call_kwargs, "enable_prompt_rewrite": self.enable_prompt_rewrite}


class LongCatImageTurboGenerator(LongCatImageGenerator):
    """The released 4-NFE CDM student of LongCat-Image."""

    recipe = "cdm"
    defaults = {**LongCatImageGenerator.defaults, "model": "byliutao/Longcat-Image-Turbo", "nfe": 4,
                "guidance": 1.0, "sigmas": TURBO_SIGMAS}
