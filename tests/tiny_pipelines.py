"""Tiny *real* diffusers pipelines built from configs in-process and saved in the published
layout (nothing is downloaded): a StableDiffusion3Pipeline (two CLIPs, optional T5) and a
LongCatImagePipeline (Qwen2.5-VL text encoder). Random weights, deterministic for a seed.

    save_tiny_sd3(folder, t5=True, seed=0) -> folder
    save_tiny_longcat(folder, seed=0) -> folder

Every tokenizer is written here (CLIP: a character-level BPE; T5: a Unigram model trained on a
small corpus; Qwen2: a byte-level BPE holding the chat-template special tokens), loaded back from
the folder and its length asserted (transformers 5 can silently build 2-entry tokenizers).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "metrics"))

import cdm_bench  # noqa: E402,F401  (installs the torchvision compat hook before transformers imports it)
from clip_fixtures import bytes_to_unicode, write_tokenizer  # noqa: E402

__all__ = ["save_tiny_sd3", "save_tiny_longcat", "SD3_SCHEDULER", "LONGCAT_SCHEDULER", "CORPUS"]

#: stabilityai/stable-diffusion-3-medium-diffusers scheduler/scheduler_config.json
SD3_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0}
#: meituan-longcat/LongCat-Image scheduler/scheduler_config.json: FLUX-style dynamic shifting with
#: base_shift == max_shift == 1.15, so mu = calculate_shift(tokens) = 1.15 at every image size and a
#: sigma s becomes e^1.15 / (e^1.15 + 1/s - 1) (``shift`` is unused under dynamic shifting). Facts
#: as published for the model (its file is not readable offline here); the pipeline's own fallbacks
#: are 0.5 / 1.15 over 256..4096 tokens.
LONGCAT_SCHEDULER = {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": True,
                     "base_shift": 1.15, "max_shift": 1.15, "base_image_seq_len": 256,
                     "max_image_seq_len": 4096}

CORPUS = [
    "a photo of a cat", "a red car on a street", "a dog running in the park at sunset",
    "an astronaut riding a horse", "a bowl of fruit on a wooden table", "a city skyline at night",
    "a watercolor painting of mountains", "a sign that says hello world", "two birds on a wire",
    "a close-up portrait of an old man", "a blue house with a green door", "prompt number one",
]


def _eval(*modules):
    for m in modules:
        m.eval()
    return modules


# --------------------------------------------------------------------------------------------
# Stable Diffusion 3
# --------------------------------------------------------------------------------------------

def _clip_text(folder: Path, seed: int, hidden: int, proj: int):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    size = write_tokenizer(folder)
    tok = CLIPTokenizer.from_pretrained(folder)
    assert len(tok) == size, f"CLIP tokenizer has {len(tok)} entries, expected {size}"
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    config = CLIPTextConfig(vocab_size=size, hidden_size=hidden, intermediate_size=2 * hidden,
                            num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                            projection_dim=proj, eos_token_id=eos, pad_token_id=eos,
                            bos_token_id=tok.convert_tokens_to_ids("<|startoftext|>"), hidden_act="gelu")
    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(config).eval(), tok


def _t5_tokenizer(folder: Path):
    """A Unigram model trained on CORPUS, wrapped as T5TokenizerFast (pad=0, </s>=1, <unk>=2)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5TokenizerFast

    raw = Tokenizer(models.Unigram())
    raw.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=120, special_tokens=["<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>", show_progress=False)
    raw.train_from_iterator(CORPUS, trainer=trainer)
    # the trainer's scores differ in the last float bits from run to run: round them (determinism)
    vocab = [(piece, round(score, 6)) for piece, score in json.loads(raw.to_str())["model"]["vocab"]]
    assert [v[0] for v in vocab[:3]] == ["<pad>", "</s>", "<unk>"], vocab[:3]
    T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=256).save_pretrained(folder)
    tok = T5TokenizerFast.from_pretrained(folder)
    assert len(tok) == len(vocab), f"T5 tokenizer has {len(tok)} entries, expected {len(vocab)}"
    assert tok("a photo of a cat").input_ids[-1] == tok.eos_token_id == 1
    return tok, len(vocab)


def _sd3_transformer(seed: int, layers: int, sample: int, joint: int, pooled: int, heads: int = 2,
                     head_dim: int = 8):
    import torch
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=sample, patch_size=2, in_channels=16, num_layers=layers, attention_head_dim=head_dim,
        num_attention_heads=heads, joint_attention_dim=joint, caption_projection_dim=heads * head_dim,
        pooled_projection_dim=pooled, out_channels=16, pos_embed_max_size=max(sample // 2, 16)).eval()


def _vae(seed: int, blocks: int = 2, width: int = 8):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    chans = [width * 2 ** i for i in range(blocks)]
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * blocks,
                         up_block_types=["UpDecoderBlock2D"] * blocks, block_out_channels=chans,
                         layers_per_block=1, latent_channels=16, norm_num_groups=min(chans),
                         use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
                         scaling_factor=1.5035, sample_size=32).eval()


def save_tiny_sd3(folder: Path, t5: bool = True, seed: int = 0, *, layers: int = 1, image_size: int = 32,
                  heads: int = 2, head_dim: int = 8, vae_blocks: int = 2) -> Path:
    """Save a tiny StableDiffusion3Pipeline (32 px images by default) into ``folder``.

    Without T5 the pipeline is saved with ``text_encoder_3=None, tokenizer_3=None``; load it with
    ``StableDiffusion3Pipeline.from_pretrained(folder, text_encoder_3=None, tokenizer_3=None)``.
    The keyword-only sizes make bigger variants (the generation-overhead benchmark)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    folder = Path(folder)
    clip_hidden, clip_proj, t5_dim = 16, 16, 32
    te1, tok1 = _clip_text(folder / "tokenizer", seed + 1, clip_hidden, clip_proj)
    te2, tok2 = _clip_text(folder / "tokenizer_2", seed + 2, clip_hidden, clip_proj)
    te3 = tok3 = None
    if t5:
        from transformers import T5Config, T5EncoderModel

        tok3, size = _t5_tokenizer(folder / "tokenizer_3")
        torch.manual_seed(seed + 3)
        te3 = T5EncoderModel(T5Config(vocab_size=size, d_model=t5_dim, d_ff=64, d_kv=8, num_layers=2,
                                      num_heads=2, relative_attention_num_buckets=8, dropout_rate=0.0,
                                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)).eval()
    vae_scale = 2 ** (vae_blocks - 1)
    pipe = StableDiffusion3Pipeline(
        transformer=_sd3_transformer(seed, layers, image_size // vae_scale, t5_dim, 2 * clip_proj, heads, head_dim),
        scheduler=FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER), vae=_vae(seed + 4, vae_blocks),
        text_encoder=te1, tokenizer=tok1, text_encoder_2=te2, tokenizer_2=tok2,
        text_encoder_3=te3, tokenizer_3=tok3)
    _eval(*(m for m in (pipe.transformer, pipe.vae, te1, te2, te3) if m is not None))
    pipe.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------------------------
# LongCat-Image
# --------------------------------------------------------------------------------------------

#: the Qwen2.5-VL added tokens, in their published order (the chat template uses the first three)
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
QWEN_MERGES = ["Ġ a", "a n", "Ġ t", "h e", "Ġt he", "i n", "e r", "o n"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}"
                 "{{ m['content'] }}{% else %}{% for c in m['content'] %}{% if c['type'] == 'text' %}"
                 "{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _qwen_tokenizer(folder: Path):
    """A byte-level BPE Qwen2Tokenizer (256 byte symbols, a few merges, the special tokens)."""
    from transformers import Qwen2Tokenizer

    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    for merge in QWEN_MERGES:
        vocab["".join(merge.split())] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=[tuple(m.split()) for m in QWEN_MERGES], model_max_length=32768,
                         extra_special_tokens=QWEN_SPECIAL[1:])
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(folder)
    tok = Qwen2Tokenizer.from_pretrained(folder)
    size = len(vocab) + len(QWEN_SPECIAL)
    assert len(tok) == size, f"Qwen2 tokenizer has {len(tok)} entries, expected {size}"
    ids = tok("<|im_start|>user\nthe cat<|im_end|>", add_special_tokens=False).input_ids
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") == len(vocab) + 1, ids
    return tok, size


def _qwen_encoder(seed: int, vocab: int, tok, hidden: int = 32):
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {n: tok.convert_tokens_to_ids(t) for n, t in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e6},
                         bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.convert_tokens_to_ids("<|im_end|>")),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=hidden,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[0]),
        **ids)
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def _qwen_processor(folder: Path, tok):
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    size = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 64}
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(size=size), tokenizer=tok,
                                 video_processor=Qwen2VLVideoProcessor(size=size), chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(folder)
    return processor


def save_tiny_longcat(folder: Path, seed: int = 0) -> Path:
    """Save a tiny LongCatImagePipeline (32 px images) into ``folder``.

    The text path is the real one: prompts are padded to the pipeline's ``tokenizer_max_length``
    (512) inside the chat template, encoded by a 2-layer Qwen2.5-VL, and the template's prefix
    and suffix are cut off again (so the transformer sees 512 text tokens)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, LongCatImagePipeline, LongCatImageTransformer2DModel

    folder = Path(folder)
    tok, vocab = _qwen_tokenizer(folder / "tokenizer")
    text_encoder = _qwen_encoder(seed + 1, vocab, tok)
    processor = _qwen_processor(folder / "text_processor", tok)
    torch.manual_seed(seed)
    transformer = LongCatImageTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=text_encoder.config.text_config.hidden_size,
        pooled_projection_dim=32, axes_dims_rope=[4, 6, 6]).eval()
    pipe = LongCatImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(**LONGCAT_SCHEDULER),
                                vae=_vae(seed + 4), text_encoder=text_encoder, tokenizer=tok,
                                text_processor=processor, transformer=transformer)
    pipe.save_pretrained(folder)
    return folder
