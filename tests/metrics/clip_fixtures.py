"""A tiny real CLIP (transformers' CLIPModel + CLIPProcessor) with random weights, saved as a
local model folder in the published layout, with a byte-level BPE tokenizer written here."""

from __future__ import annotations

import json
from pathlib import Path

CONTEXT = 77


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode table (transformers 5 no longer exports it)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_tokenizer(folder: Path) -> int:
    """vocab.json / merges.txt / tokenizer_config.json of a character-level CLIP BPE; returns its size."""
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    for merge in ("r e", "re d</w>"):
        vocab["".join(merge.split())] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\nr e\nre d</w>\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"model_max_length": CONTEXT, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
         "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer"}))
    return len(vocab)


def tiny_clip(folder: Path, projection_dim: int = 16, seed: int = 0, image_size: int = 32) -> Path:
    """Save a random tiny CLIPModel + CLIPProcessor into ``folder``; returns it."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    size = write_tokenizer(folder)
    tok = CLIPTokenizer.from_pretrained(folder)
    assert len(tok) == size, f"tokenizer has {len(tok)} entries, expected {size}"
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    config = CLIPConfig(
        text_config=dict(vocab_size=size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=CONTEXT, eos_token_id=eos,
                         bos_token_id=tok.convert_tokens_to_ids("<|startoftext|>"), pad_token_id=eos),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        projection_dim=projection_dim)
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    CLIPProcessor(image_processor=images, tokenizer=tok).save_pretrained(folder)
    return folder
