"""A tiny random Qwen2-VL / Qwen2.5-VL model folder in the hub's layout, built in-process (no
download): a byte-level BPE tokenizer trained here on the texts the tests send (the judge's
prompt, VQAScore's questions), Qwen2-VL's special tokens, its image processor, a chat template in
Qwen2-VL-Instruct's layout, and a 2-layer hidden-32 language model with a depth-1 vision tower.
Used by the vqascore and llm_judge tests, and inside .venv-t2v by t2v_env_checks.py."""

from __future__ import annotations

from pathlib import Path

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
BPE_VOCAB = 600
# Qwen2.5-VL-Instruct's preprocessor_config.json range (= qwen-vl-utils' 4..16384 tokens of 28x28)
PIXELS = {"min_pixels": 3136, "max_pixels": 12845056}
# Qwen2-VL-Instruct's chat layout (default system prompt, vision placeholders, generation prompt)
TEMPLATE = ("{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
            "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
            "{% else %}{% for content in message['content'] %}"
            "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
            "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def corpus() -> list[str]:
    from metrics.llm_judge_protocol import SYSTEM_PROMPT, USER_TEMPLATE
    from metrics.vqascore import QUESTION, QUESTION_T2V_3_0

    words = "Yes No yes no [[Winner: Image A]] [[Winner: Image B]] [[Winner: Tie]] a red apple two cats sofa"
    return [SYSTEM_PROMPT, USER_TEMPLATE, QUESTION, QUESTION_T2V_3_0, "You are a helpful assistant.", words] * 3


def tiny_tokenizer(texts: list[str] | None = None, vocab: int = BPE_VOCAB):
    """Qwen2's byte-level BPE trained in-process on ``texts`` (default: what these tests send)
    to ``vocab`` tokens, then Qwen2-VL's special tokens (also hpsv3_env_checks.py's, on its texts)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(corpus() if texts is None else texts, trainer)
    return Qwen2TokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                              unk_token=None, bos_token=None, additional_special_tokens=SPECIAL[1:],
                              model_max_length=32768)


def tiny_config(ids: dict, vocab: int, qwen25: bool = False):
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    text = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=False,
                rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]}, bos_token_id=ids["<|endoftext|>"],
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    vision = dict(depth=1, hidden_size=32, num_heads=2, out_hidden_size=32, intermediate_size=32,
                  fullatt_block_indexes=[0]) if qwen25 else dict(depth=1, embed_dim=16, hidden_size=32, num_heads=2,
                                                                 mlp_ratio=2)
    cls = Qwen2_5_VLConfig if qwen25 else Qwen2VLConfig
    return cls(**text, text_config=dict(text), vision_config=vision, image_token_id=ids["<|image_pad|>"],
               video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
               vision_end_token_id=ids["<|vision_end|>"], vision_token_id=ids["<|vision_pad|>"])


def write_model(folder: Path, seed: int = 0, qwen25: bool = False, yes_gain: float = 0.0) -> Path:
    """The model folder (config, safetensors weights, tokenizer, processor, chat template).
    ``yes_gain`` > 0 points the "Yes" row of the output layer along the embedding of the generation
    prompt's last token ("\n"), which dominates the last hidden state of a random model: P("Yes")
    then spreads over (0, 1) between inputs instead of staying near 1 / vocabulary size."""
    import torch

    from metrics._compat_torchvision import ensure_torchvision

    ensure_torchvision()  # transformers' video processor imports it
    from transformers import AutoModelForImageTextToText, Qwen2VLImageProcessor, Qwen2VLProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tok = tiny_tokenizer()
    assert len(tok) == BPE_VOCAB + len(SPECIAL), f"tiny tokenizer has {len(tok)} tokens"
    assert len(tok.encode("Yes", add_special_tokens=False)) == 1
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**PIXELS), tokenizer=tok,
                                 video_processor=Qwen2VLVideoProcessor(), chat_template=TEMPLATE)
    processor.save_pretrained(folder)
    torch.manual_seed(seed)
    config = tiny_config(dict(zip(SPECIAL, tok.convert_tokens_to_ids(SPECIAL))), len(tok), qwen25)
    model = AutoModelForImageTextToText.from_config(config)
    with torch.no_grad():  # O(1) logits, so probabilities differ between images and prompts
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5)
        if yes_gain:
            yes, newline = tok.encode("Yes", add_special_tokens=False)[0], tok.encode("\n", add_special_tokens=False)[0]
            e = model.get_input_embeddings().weight[newline]
            model.get_output_embeddings().weight[yes] = yes_gain * e / e.norm() / e.numel() ** 0.5
    model.save_pretrained(folder)
    return folder
