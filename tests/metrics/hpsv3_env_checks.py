"""hpsv3 checks that run inside .venv-hpsv3 (launched by tests/metrics/test_hpsv3.py; the main
run does not collect this file: its name does not start with ``test_``).

A tiny random-weight HPSv3 is published in the real layout: a Qwen2-VL base folder (config,
byte-level BPE tokenizer with Qwen2-VL's special tokens, image processor, chat template, and
base weights, which only the package's own inferencer reads) and an ``HPSv3.safetensors``
holding the full reward model that the package's own ``create_model_and_processor`` builds.
The metric loads it through its normal local-path options; the package's own
``HPSv3RewardInferencer`` is the reference. Nothing is downloaded (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from metric_kit import check_metric  # noqa: E402
from tiny_qwen2vl import SPECIAL, TEMPLATE  # noqa: E402  (Qwen2-VL's special tokens and chat layout)
from tiny_qwen2vl import tiny_tokenizer as qwen_bpe_tokenizer  # noqa: E402
from metrics.hpsv3 import HPSv3, load_processor  # noqa: E402  (cdm_bench first: its torchvision hook)

hpsv3 = pytest.importorskip("hpsv3")

# the base tokenizer: a 915-token byte-level BPE, then Qwen2-VL's special tokens (ids 915..922)
BPE_VOCAB = 915  # every merge that hpsv3's instruction text offers
BASE_TOKENS = BPE_VOCAB + len(SPECIAL)
PROMPTS = ["a red apple on a table", "two cats on a blue sofa", "x", "an old lighthouse at dusk, oil painting"]
GOLDEN = 0.6612184047698975  # mean mu of the kit's four images (torch 2.13.0 CPU, transformers 4.45.2)


def tiny_tokenizer():
    """Qwen2's byte-level BPE, trained in-process on hpsv3's own instruction text (so its
    ~2,300-character prompt is a few hundred tokens), plus Qwen2-VL's special tokens."""
    from hpsv3.dataset.data_collator_qwen import INSTRUCTION, prompt_with_special_token

    return qwen_bpe_tokenizer([INSTRUCTION, prompt_with_special_token], BPE_VOCAB)


def tiny_config(ids: dict):
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        vocab_size=BASE_TOKENS, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=8192, tie_word_embeddings=False,
        rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]},
        vision_config=dict(depth=1, embed_dim=16, hidden_size=32, num_heads=2, mlp_ratio=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        vision_token_id=ids["<|vision_pad|>"], bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"])


def write_base(folder: Path) -> Path:
    """A Qwen2-VL base folder in the hub's layout (random base weights, for the package's loader)."""
    from transformers import Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor, Qwen2VLProcessor

    tok = tiny_tokenizer()
    assert len(tok) == BASE_TOKENS, f"tiny tokenizer has {len(tok)} tokens, expected {BASE_TOKENS}"
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(), tokenizer=tok, chat_template=TEMPLATE)
    processor.save_pretrained(folder)
    torch.manual_seed(0)
    config = tiny_config(dict(zip(SPECIAL, tok.convert_tokens_to_ids(SPECIAL))))
    Qwen2VLForConditionalGeneration(config).save_pretrained(folder)
    return folder


def package_yaml(folder: Path, base: Path, dtype: str) -> Path:
    """hpsv3's own inference config, pointed at the tiny base, in ``dtype``."""
    cfg = yaml.safe_load((Path(hpsv3.__file__).parent / "config" / "HPSv3_7B.yaml").read_text())
    cfg.update(model_name_or_path=str(base), torch_dtype=dtype, bf16=dtype == "bfloat16")
    path = folder / f"HPSv3_tiny_{dtype}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def seeded_state(model) -> dict:
    """Every tensor of the reward model from a fixed numpy stream (scale ~1/sqrt(fan_in)), so
    scores are O(1), differ between images, and do not depend on torch's init code."""
    rng, state = np.random.default_rng(0), {}
    for k, v in model.state_dict().items():
        if v.ndim >= 2:
            a = rng.normal(0.0, 1.0 / np.sqrt(np.prod(v.shape[1:])), v.shape)
        else:
            a = rng.normal(0.0, 0.1, v.shape) + (0.0 if k.endswith("bias") else 1.0)
        state[k] = torch.from_numpy(a.astype(np.float32))
    return state


def write_checkpoint(folder: Path, yaml_path: Path) -> Path:
    """``HPSv3.safetensors``: the reward model built by hpsv3's own create_model_and_processor."""
    import safetensors.torch
    from hpsv3.train import create_model_and_processor
    from hpsv3.utils.parser import DataConfig, ModelConfig, PEFTLoraConfig, TrainingConfig, parse_args_with_yaml

    (_, training, model_cfg, lora), _ = parse_args_with_yaml(
        (DataConfig, TrainingConfig, ModelConfig, PEFTLoraConfig), str(yaml_path), is_train=False)
    model, _, _ = create_model_and_processor(model_cfg, lora, training)
    path = folder / "HPSv3.safetensors"
    safetensors.torch.save_file(seeded_state(model), str(path))
    return path


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("hpsv3")
    base = write_base(root / "Qwen2-VL-tiny")
    yaml32 = package_yaml(root, base, "float32")
    return {"base": base, "checkpoint": write_checkpoint(root, yaml32), "yaml32": yaml32,
            "yaml16": package_yaml(root, base, "bfloat16")}


def images(n=4, seed=0):
    """Random RGB images of a few sizes and aspect ratios (hpsv3 resizes each to ~448x448)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40 + 8 * (i % 3), 48 + 16 * (i % 2), 3), dtype=np.uint8) for i in range(n)]


def metric(published, **kw) -> HPSv3:
    return HPSv3(checkpoint=str(published["checkpoint"]), base_model=str(published["base"]), **kw)


def score(m: HPSv3, imgs, prompts) -> np.ndarray:
    from PIL import Image

    m.setup()
    try:
        return m.score([Image.fromarray(a) for a in imgs], prompts, [{}] * len(prompts))
    finally:
        m.teardown()


def test_processor_has_the_base_tokens_and_the_reward_token(published):
    proc = load_processor(published["base"])
    assert len(proc.tokenizer) == BASE_TOKENS + 1
    assert proc.tokenizer.convert_tokens_to_ids("<|Reward|>") == BASE_TOKENS
    assert proc.tokenizer.padding_side == "right"


def test_scores_equal_the_package_inferencer(published):
    from hpsv3 import HPSv3RewardInferencer
    from PIL import Image

    imgs = images()
    reference = HPSv3RewardInferencer(config_path=str(published["yaml32"]),
                                      checkpoint_path=str(published["checkpoint"]), device="cpu")
    with torch.no_grad():
        rewards = reference.reward([Image.fromarray(a) for a in imgs], PROMPTS).float().numpy()
    ours = score(metric(published), imgs, PROMPTS)
    diff = float(np.abs(ours - rewards[:, 0]).max())
    print(f"\nmax |metric - package inferencer mu| = {diff:.3g}; mu = {np.round(rewards[:, 0], 5).tolist()}")
    assert diff <= 1e-4
    assert np.ptp(rewards[:, 0]) > 1e-2  # the scores tell images apart, so agreement means something
    assert np.abs(rewards[:, 1] - rewards[:, 0]).min() > 1e-3  # mu, not sigma


def test_prompt_changes_the_score(published):
    imgs = images(2)
    a = score(metric(published), imgs, PROMPTS[:2])
    b = score(metric(published), imgs, PROMPTS[2:4])
    assert np.abs(a - b).min() > 1e-4


def test_bfloat16_builds_the_package_model(published):
    """The package's default dtype (bfloat16, head float32): same tensors and dtypes as the
    package's own loader; on CPU it scores close to float32."""
    from hpsv3 import HPSv3RewardInferencer
    from metrics.hpsv3 import build_reward_model

    reference = HPSv3RewardInferencer(config_path=str(published["yaml16"]),
                                      checkpoint_path=str(published["checkpoint"]), device="cpu").model
    ours = build_reward_model(published["base"], published["checkpoint"], load_processor(published["base"]),
                              "bfloat16")
    ref_sd, our_sd = reference.state_dict(), ours.state_dict()
    assert ref_sd.keys() == our_sd.keys()
    for k in ref_sd:
        assert our_sd[k].dtype == ref_sd[k].dtype and torch.equal(our_sd[k], ref_sd[k]), k
    assert our_sd["rm_head.0.weight"].dtype == torch.float32
    imgs = images(3)
    low = score(metric(published, dtype="bfloat16"), imgs, PROMPTS[:3])
    full = score(metric(published), imgs, PROMPTS[:3])
    assert not np.array_equal(low, full)
    np.testing.assert_allclose(low, full, atol=0.1)


def test_metric_kit(published):
    imgs = np.random.default_rng(1).integers(0, 256, (4, 40, 56, 3), dtype=np.uint8)
    meta = [{"prompt_id": f"p{i}", "k": 0} for i in range(4)]
    result = check_metric(lambda: metric(published), imgs, PROMPTS, meta, golden=GOLDEN)
    print(f"\nkit value {result.values['hpsv3']!r} (golden {GOLDEN!r})")


def test_check_passes_here_and_names_a_missing_checkpoint(published, tmp_path):
    metric(published).check()
    with pytest.raises(ImportError, match="HPSv3 checkpoint: .*nope.safetensors \\(not found\\)"):
        HPSv3(checkpoint=str(tmp_path / "nope.safetensors"), base_model=str(published["base"])).check()
