"""imagereward on the image-reward package's own ImageReward model (its BLIP ViT and BERT, shrunk:
a 1-block ViT and a 1-layer BERT) with random weights, written in the published layout
(ImageReward.pt state dict + med_config.json + a BERT tokenizer folder) and loaded through the
metric's local-path options; agreement with the package's own ``ImageReward.score``."""

import importlib.util
import json
import sys
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch

# not pytest.importorskip: importing ImageReward before metrics._compat_imagereward patches
# transformers fails on transformers 5 (the package's own imports break)
if importlib.util.find_spec("ImageReward") is None:
    pytest.skip("image-reward is not installed (make eval-env)", allow_module_level=True)

from cdm_bench.errors import MissingDependencyError, SpecError  # noqa: E402
from metrics.imagereward import ImageReward  # noqa: E402

PROMPTS = ["a red apple", "two cats on a blue sofa", "a lighthouse at dusk", "a bowl of ramen",
           "an astronaut riding a horse", " ".join(["a cat on a red sofa"] * 8)]  # the last: > 35 tokens
WORDS = ("a an the of on at in and with two red blue cat cats sofa apple lighthouse dusk bowl ramen "
         "astronaut riding horse photo").split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VISION_WIDTH = 32
# BLIP's med_config.json keys; hidden_size stays 768 (the package's MLP head is MLP(768))
MED = {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
       "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 64,
       "layer_norm_eps": 1e-12, "max_position_embeddings": 40, "model_type": "bert", "num_attention_heads": 4,
       "num_hidden_layers": 1, "pad_token_id": 0, "type_vocab_size": 2, "encoder_width": VISION_WIDTH,
       "add_cross_attention": True}


def _tiny_vit(vit, image_size, *args, **kwargs):
    """The package's own VisionTransformer at a tiny size (BLIP builds ViT-L: 24 blocks, width 1024)."""
    from ImageReward.models.BLIP.vit import VisionTransformer

    return VisionTransformer(img_size=image_size, patch_size=32, embed_dim=VISION_WIDTH, depth=1, num_heads=2), \
        VISION_WIDTH


def _write_tokenizer(folder, words):
    from transformers import BertTokenizer

    vocab = list(dict.fromkeys(SPECIALS + words + list("abcdefghijklmnopqrstuvwxyz")
                               + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]))
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    tok = BertTokenizer.from_pretrained(str(folder), local_files_only=True)
    assert len(tok) == len(vocab)  # transformers can silently build a 5-token tokenizer instead
    return len(vocab)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Paths (checkpoint, med_config, bert folder) of a random tiny ImageReward; the package's
    ``create_vit`` builds the tiny ViT while this module's tests run."""
    from metrics._compat_imagereward import import_imagereward

    import_imagereward()
    from ImageReward.models.BLIP import blip_pretrain

    d = tmp_path_factory.mktemp("imagereward")
    n_vocab = _write_tokenizer(d / "bert", WORDS)
    med = d / "med_config.json"
    med.write_text(json.dumps({**MED, "vocab_size": n_vocab + 2}))  # + BLIP's [DEC] and [ENC]
    with mock.patch.object(blip_pretrain, "create_vit", _tiny_vit):
        model = _package_model(d / "bert", med)
        torch.manual_seed(0)
        with torch.no_grad():  # spread the reward: the package's MLP init (std 1/769) makes it ~constant
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        ckpt = d / "ImageReward.pt"
        torch.save(model.state_dict(), ckpt)
        yield SimpleNamespace(checkpoint=ckpt, med_config=med, bert=d / "bert")


def _package_model(bert, med, checkpoint=None):
    """The package's ImageReward (``ImageReward.load`` when a checkpoint is given), with its
    ``BertTokenizer.from_pretrained('bert-base-uncased')`` pointed at the test's folder."""
    import ImageReward as RM
    from ImageReward.models.BLIP import blip
    from transformers import BertTokenizer

    local = SimpleNamespace(from_pretrained=lambda name, **kw: BertTokenizer.from_pretrained(str(bert), **kw))
    with mock.patch.object(blip, "BertTokenizer", local):
        if checkpoint is not None:
            return RM.load(str(checkpoint), device="cpu", med_config=str(med))
        torch.manual_seed(0)
        return RM.ImageReward(med_config=str(med), device="cpu")


def _metric(tiny, **kw):
    return ImageReward(**{"checkpoint": str(tiny.checkpoint), "med_config": str(tiny.med_config),
                          "bert": str(tiny.bert), **kw})


def _images(n=6, seed=0):
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 256, (n, 40, 48, 3), dtype=np.uint8)
    return arr, [Image.fromarray(a) for a in arr]


def _meta(prompts):
    return [{"prompt_id": f"p{i}", "k": 0, "prompt": p} for i, p in enumerate(prompts)]


def test_agrees_with_the_package_score(tiny):
    _, pil = _images()
    ours = _metric(tiny)
    ours.setup()
    assert ours.model.blip.visual_encoder.embed_dim == VISION_WIDTH  # the tiny architecture was built
    s = ours.score(pil, PROMPTS, _meta(PROMPTS))
    ours.teardown()
    ref = _package_model(tiny.bert, tiny.med_config, tiny.checkpoint)
    want = np.asarray([ref.score(p, im) for p, im in zip(PROMPTS, pil)])
    diff = float(np.abs(want - s).max())
    print(f"max abs diff vs ImageReward.score: {diff:.3g}")
    assert diff <= 1e-4
    assert np.ptp(s) > 0.05  # the scores differ across images/prompts: the check can fail
    # the image matters, not only the prompt
    other = np.asarray([ref.score(PROMPTS[0], im) for im in pil])
    assert np.ptp(other) > 1e-3


# the tiny model of the fixture (seed 0, +0.05 noise), images seed 1, recorded 2026-11-26
GOLDEN = -0.031734083662740886


def test_passes_the_kit(tiny):
    from metric_kit import check_metric

    arr, _ = _images(8, seed=1)
    prompts = PROMPTS + PROMPTS[:2]
    ref = check_metric(lambda: _metric(tiny), arr, prompts, _meta(prompts), golden=GOLDEN, rtol=1e-5, atol=1e-6)
    print("kit value", ref.values)
    assert ref.values["truncated_prompts"] == 1


def test_a_wrong_tokenizer_or_checkpoint_is_one_clear_error(tiny, tmp_path):
    _write_tokenizer(tmp_path / "small", ["cat"])
    with pytest.raises(SpecError, match="'bert'") as err:
        _metric(tiny, bert=str(tmp_path / "small")).setup()
    assert "\n" not in str(err.value)
    state = torch.load(tiny.checkpoint, weights_only=True)
    torch.save({k: v for k, v in state.items() if not k.startswith("mlp.")}, tmp_path / "ImageReward.pt")
    with pytest.raises(SpecError, match="mlp.layers"):
        _metric(tiny, checkpoint=str(tmp_path / "ImageReward.pt")).setup()


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("metric 'imagereward'")
    return msg


def test_missing_package_is_one_clear_error(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "ImageReward", None)  # find_spec -> None: not installed
    with pytest.raises(MissingDependencyError) as err:
        _metric(tiny).check()
    msg = _one_line(err)
    assert "ImageReward" in msg and "cdm-bench[eval]" in msg and "make eval-env" in msg


def test_missing_weights_are_one_clear_error(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(MissingDependencyError) as err:
        ImageReward().check()
    msg = _one_line(err)
    for needle in ("THUDM/ImageReward", "ImageReward.pt", "med_config.json", "bert-base-uncased", "vocab.txt",
                   "'checkpoint'", "'med_config'", "'bert'"):
        assert needle in msg, (needle, msg)
    with pytest.raises(MissingDependencyError) as err:  # a local path that does not exist
        ImageReward(checkpoint=str(tmp_path / "nope.pt")).check()
    assert "nope.pt (not found)" in _one_line(err)
    from cdm_bench.cli import main
    from cdm_bench.generate import generate
    from cdm_bench.prompts import PromptSet

    rows = [{"id": f"q{i}", "prompt": p} for i, p in enumerate(PROMPTS[:2])]
    run = generate({"generator": "dummy", "name": "d"}, PromptSet("ir", "1", rows), tmp_path / "run", 1, progress=False)
    code = main(["evaluate", "--images", str(run), "--metrics", "metrics.imagereward:ImageReward",
                 "--out", str(tmp_path / "scores")])
    err_line = capsys.readouterr().err.strip()
    assert code == 2 and len(err_line.splitlines()) == 1 and "ImageReward.pt" in err_line, err_line
    assert not (tmp_path / "scores").exists()
