"""clipscore / pickscore / aesthetic on a tiny real CLIP with random weights, saved in the
published layout and loaded through the metrics' normal local-path loading; agreement with
torchmetrics' CLIPScore and with the model cards' own computations; the metric kit."""

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from clip_fixtures import tiny_clip  # noqa: E402

from cdm_bench.errors import MissingDependencyError  # noqa: E402
from metrics.clip_family import Aesthetic, AestheticMLP, ClipScore, PickScore  # noqa: E402

PROMPTS = ["a red apple", "two cats on a blue sofa", "a red red car", "an old lighthouse", "a bowl of ramen",
           "a small cabin in the snow"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def head_file(tmp_path_factory):
    torch.manual_seed(1)
    head = AestheticMLP.build(16)
    path = tmp_path_factory.mktemp("aesthetic") / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save(head.state_dict(), path)
    return path


def _images(n=6, size=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _meta(prompts):
    return [{"prompt_id": f"p{i}", "k": 0, "prompt": p} for i, p in enumerate(prompts)]


def _pil(images):
    from PIL import Image

    return [Image.fromarray(im) for im in images]


def _reference_model(clip_dir):
    from transformers import CLIPModel, CLIPProcessor

    return CLIPModel.from_pretrained(clip_dir).eval(), CLIPProcessor.from_pretrained(clip_dir)


def test_clipscore_agrees_with_torchmetrics(clip_dir):
    from torchmetrics.multimodal.clip_score import CLIPScore

    model, processor = _reference_model(clip_dir)

    class Tensors(torch.nn.Module):  # transformers 5 returns ModelOutputs where torchmetrics wants tensors
        def __init__(self, m):
            super().__init__()
            self.m, self.config = m, m.config

        def get_image_features(self, *a, **k):
            out = self.m.get_image_features(*a, **k)
            return out if torch.is_tensor(out) else out.pooler_output

        def get_text_features(self, *a, **k):
            out = self.m.get_text_features(*a, **k)
            return out if torch.is_tensor(out) else out.pooler_output

    images = _images()
    ours = ClipScore(model=str(clip_dir))
    ours.setup()
    s = ours.score(_pil(images), PROMPTS, _meta(PROMPTS))
    for i in range(len(PROMPTS)):  # one pair at a time: torchmetrics averages a batch
        ref = CLIPScore(model_name_or_path=lambda: (Tensors(model), processor))
        ref.update(torch.from_numpy(images[i]).permute(2, 0, 1)[None], [PROMPTS[i]])
        assert abs(float(ref.compute()) - s[i]) <= 1e-4
    assert s.max() > 0  # not all clamped


def test_pickscore_agrees_with_its_model_card(clip_dir):
    model, processor = _reference_model(clip_dir)
    images = _pil(_images())
    ours = PickScore(model=str(clip_dir), processor=str(clip_dir))
    ours.setup()
    s = ours.score(images, PROMPTS, _meta(PROMPTS))
    for i, prompt in enumerate(PROMPTS):  # the model card's calc_probs, one prompt and its image
        with torch.no_grad():
            image_inputs = processor(images=[images[i]], padding=True, truncation=True, max_length=77, return_tensors="pt")
            text_inputs = processor(text=prompt, padding=True, truncation=True, max_length=77, return_tensors="pt")
            image_embs = model.get_image_features(**image_inputs)
            image_embs = image_embs if torch.is_tensor(image_embs) else image_embs.pooler_output
            image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
            text_embs = model.get_text_features(**text_inputs)
            text_embs = text_embs if torch.is_tensor(text_embs) else text_embs.pooler_output
            text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
            ref = (model.logit_scale.exp() * (text_embs @ image_embs.T)[0])[0]
        assert abs(float(ref) - s[i]) <= 1e-4


def test_aesthetic_agrees_with_the_predictor_recipe(clip_dir, head_file):
    model, processor = _reference_model(clip_dir)
    images = _pil(_images())
    ours = Aesthetic(model=str(clip_dir), head=str(head_file))
    ours.setup()
    s = ours.score(images, PROMPTS, _meta(PROMPTS))
    head = AestheticMLP.build(16)
    head.load_state_dict(torch.load(head_file, weights_only=True))
    head.eval()
    with torch.no_grad():  # simple_inference.py: encode_image, numpy L2 normalise, MLP
        feats = model.get_image_features(pixel_values=processor(images=images, return_tensors="pt")["pixel_values"])
        feats = (feats if torch.is_tensor(feats) else feats.pooler_output).numpy()
        feats = feats / np.linalg.norm(feats, axis=-1, keepdims=True)
        ref = head(torch.from_numpy(feats).float()).reshape(-1).numpy()
    np.testing.assert_allclose(s, ref, atol=1e-4)


# the tiny random CLIP of clip_fixtures (seed 0) and its aesthetic head (seed 1), recorded 2026-11-26
GOLDEN = {"clipscore": 43.38995981216431, "pickscore": 6.198193192481995, "aesthetic": -0.05054732831194997}


@pytest.mark.parametrize("name", ["clipscore", "pickscore", "aesthetic"])
def test_clip_metrics_pass_the_kit(clip_dir, head_file, name):
    from metric_kit import check_metric

    make = {"clipscore": lambda: ClipScore(model=str(clip_dir)),
            "pickscore": lambda: PickScore(model=str(clip_dir), processor=str(clip_dir)),
            "aesthetic": lambda: Aesthetic(model=str(clip_dir), head=str(head_file))}[name]
    check_metric(make, _images(8), PROMPTS + PROMPTS[:2], _meta(PROMPTS + PROMPTS[:2]),
                 golden=GOLDEN[name], rtol=1e-5, atol=1e-5)


def test_truncated_prompts_are_counted(clip_dir):
    from metric_kit import check_metric

    long = "a " * 80 + "very long prompt"  # > 77 tokens with the character-level test tokenizer
    prompts = PROMPTS[:3] + [long]
    ref = check_metric(lambda: ClipScore(model=str(clip_dir)), _images(4), prompts, _meta(prompts))
    assert ref.values["truncated_prompts"] == 1


def test_missing_weights_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    for metric, needles in [(ClipScore(), ["openai/clip-vit-large-patch14", "huggingface-cli download", "'model'"]),
                            (PickScore(), ["yuvalkirstain/PickScore_v1", "laion/CLIP-ViT-H-14"]),
                            (Aesthetic(model=str(tmp_path / "missing")), ["missing", "sac+logos+ava1-l14-linearMSE.pth"])]:
        with pytest.raises(MissingDependencyError) as err:
            metric.check()
        msg = str(err.value)
        assert "\n" not in msg and all(n in msg for n in needles), msg


@pytest.mark.parametrize("cls", [ClipScore, PickScore, Aesthetic])
def test_missing_package_is_one_clear_error(monkeypatch, cls):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "transformers" else real(n, *a))
    with pytest.raises(MissingDependencyError, match=r"transformers.*cdm-bench\[eval\].*make eval-env") as err:
        cls(model="/nonexistent").check()
    assert "\n" not in str(err.value) and "/nonexistent" in str(err.value)


# -- the image processor's backend is part of the identity ----------------------------------------------------------
def test_the_image_processor_backend_is_in_the_identity_and_checked_at_setup(clip_dir, monkeypatch):
    import metrics.clip_family as cf

    assert ClipScore(model=str(clip_dir)).describe()["image_processor_backend"] == cf.expected_image_backend()
    ours = ClipScore(model=str(clip_dir))
    ours.setup()  # what transformers loaded is what the identity says
    assert cf.image_backend(ours.processor.image_processor) == cf.expected_image_backend()
    other = {"torchvision": "pil", "pil": "torchvision"}[cf.expected_image_backend()]
    monkeypatch.setattr(cf, "expected_image_backend", lambda: other)
    assert ClipScore(model=str(clip_dir)).describe()["image_processor_backend"] == other  # another identity
    wrong = ClipScore(model=str(clip_dir))
    with pytest.raises(RuntimeError, match=f"where {other} was expected"):
        wrong.setup()
    assert wrong.processor is None


def test_the_two_backends_give_different_pixels_so_the_identity_must_tell_them_apart(clip_dir):
    pytest.importorskip("torchvision")
    from transformers import CLIPProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    import metrics.clip_family as cf

    tv = CLIPProcessor.from_pretrained(clip_dir).image_processor
    pil = CLIPImageProcessorPil.from_pretrained(clip_dir)
    assert (cf.image_backend(tv), cf.image_backend(pil)) == ("torchvision", "pil")
    images = _pil(_images(4, 97, seed=3))  # a resize that is not exact
    a = tv(images=images, return_tensors="pt")["pixel_values"]
    b = pil(images=images, return_tensors="pt")["pixel_values"]
    assert a.shape == b.shape and not torch.equal(a, b)
