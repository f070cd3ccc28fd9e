"""The tiny FLUX.1 / PixArt-Sigma / SDXL pipelines of tests/tiny_pipelines_extra.py: they load back
offline with ``from_pretrained``, generate 32 px images deterministically for a seed, and run the
denoiser with the number of batch rows per step that (no) classifier-free guidance implies."""

import os

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from tiny_pipelines_extra import save_tiny_flux, save_tiny_pixart, save_tiny_sdxl  # noqa: E402

SIZE, STEPS, PROMPT = 32, 2, "a photo of a red car"

#: name -> (builder, pipeline class name, denoiser attribute, keyword arguments of every call)
CASES = {
    "flux": (save_tiny_flux, "FluxPipeline", "transformer", {}),
    "pixart": (save_tiny_pixart, "PixArtSigmaPipeline", "transformer",
               {"use_resolution_binning": False, "clean_caption": False}),
    "sdxl": (save_tiny_sdxl, "StableDiffusionXLPipeline", "unet", {}),
}

#: (case, guidance keyword arguments, denoiser calls per step, batch rows per step)
GUIDANCE = [
    ("flux", {"guidance_scale": 1.0}, 1, 1),
    ("flux", {"guidance_scale": 3.5}, 1, 1),  # distilled guidance: an input of the transformer, no CFG
    ("flux", {"true_cfg_scale": 3.0}, 1, 1),  # true CFG needs a negative prompt too
    ("flux", {"true_cfg_scale": 3.0, "negative_prompt": "blurry"}, 2, 2),  # two separate calls
    ("pixart", {"guidance_scale": 1.0}, 1, 1),
    ("pixart", {"guidance_scale": 3.0}, 1, 2),  # one call on a doubled batch
    ("sdxl", {"guidance_scale": 1.0}, 1, 1),
    ("sdxl", {"guidance_scale": 3.0}, 1, 2),
]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {name: build(tmp_path_factory.mktemp(f"tiny-{name}"), seed=0) for name, (build, *_) in CASES.items()}


def _load(folders, name):
    import diffusers

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    _, cls, _, _ = CASES[name]
    pipe = getattr(diffusers, cls).from_pretrained(folders[name], local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    for key, module in pipe.components.items():
        if key.startswith("tokenizer"):
            # not a silent 2-entry tokenizer (transformers 5): the prompt maps to known pieces only
            ids = module(PROMPT).input_ids
            assert len(module) > 50 and module.unk_token_id not in ids[1:-1], (name, key, len(module), ids)
        elif isinstance(module, torch.nn.Module):
            assert not module.training, f"{name}/{key} loaded in train mode"
    return pipe


def _generate(pipe, name, seed=0, **kwargs):
    out = pipe(PROMPT, num_inference_steps=STEPS, height=SIZE, width=SIZE, output_type="np",
               generator=torch.Generator("cpu").manual_seed(seed), **CASES[name][3], **kwargs)
    return (np.clip(out.images, 0, 1) * 255).round().astype(np.uint8)


@pytest.mark.parametrize("name, guidance", [(c, g) for c, g, *_ in GUIDANCE])
def test_deterministic_for_a_seed(folders, name, guidance):
    pipe = _load(folders, name)
    first, second = _generate(pipe, name, **guidance), _generate(pipe, name, **guidance)
    assert first.shape == (1, SIZE, SIZE, 3) and first.dtype == np.uint8
    assert np.array_equal(first, second)
    assert not np.array_equal(first, _generate(pipe, name, seed=1, **guidance))


@pytest.mark.parametrize("name", list(CASES))
def test_guidance_changes_the_image(folders, name):
    pipe = _load(folders, name)
    cfg = {"true_cfg_scale": 3.0, "negative_prompt": "blurry"} if name == "flux" else {"guidance_scale": 3.0}
    assert not np.array_equal(_generate(pipe, name, guidance_scale=1.0), _generate(pipe, name, **cfg))


@pytest.mark.parametrize("name, guidance, calls, rows", GUIDANCE)
def test_denoiser_rows_per_step(folders, name, guidance, calls, rows):
    pipe = _load(folders, name)
    seen = []

    def hook(module, args, kwargs):
        x = args[0] if args else kwargs.get("hidden_states", kwargs.get("sample"))
        seen.append(x.shape[0])

    handle = getattr(pipe, CASES[name][2]).register_forward_pre_hook(hook, with_kwargs=True)
    try:
        image = _generate(pipe, name, **guidance)
    finally:
        handle.remove()
    assert image.shape == (1, SIZE, SIZE, 3)
    assert len(seen) == STEPS * calls, seen
    assert sum(seen) == STEPS * rows, seen
