"""``ToyFlowModel``: the toy world's text-conditioned rectified-flow UNet.

Conventions (see docs/ALGORITHM.md): data space ``x = pixels / 127.5 - 1``; a noisy sample at
level ``s`` is ``x_s = (1 - s) * x0 + s * eps``; the model predicts ``v = eps - x0``, hence
``x0_hat = x_s - s * v``.

Architecture::

    tokens (B, L) -> token + position embeddings, a learned "register" token prepended
                  -> ``ToyTextLayer`` x text_layers (pre-norm transformer)  -> context (B, 1+L, D)
    sigma (B,)    -> sinusoidal(1000 * sigma) -> MLP  (+ pooled context)   -> temb (B, T)
    x (B,3,32,32) -> 2x2 pixel-unshuffle (12, 16, 16) -> conv
                  -> down path of ``ToyUNetBlock`` (ResBlock with FiLM from temb, then optional
                     self-attention + cross-attention to the context), a mid block, an up path
                     with skip connections -> conv -> pixel-shuffle -> v (B, 3, 32, 32)

The register token keeps cross-attention defined for the empty prompt (all pad), which is what
classifier-free guidance uses as the unconditional branch.

``ToyUNetBlock`` and ``ToyTextLayer`` are the units for FSDP2 (``_no_split_modules``) and for
gradient checkpointing (``model.enable_gradient_checkpointing()``).

Example::

    >>> import torch
    >>> from cdm_bench.toy.model import ToyFlowModel
    >>> m = ToyFlowModel(block_out_channels=(16, 32), vocab_size=32, max_tokens=8)
    >>> v = m(torch.randn(2, 3, 32, 32), torch.rand(2), torch.zeros(2, 8, dtype=torch.long))
    >>> tuple(v.shape)
    (2, 3, 32, 32)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn


def _groups(ch: int) -> int:
    for g in (8, 4, 2, 1):
        if ch % g == 0:
            return g
    return 1


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) float -> (B, dim) sinusoidal features (as for diffusion timesteps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ToyTextLayer(nn.Module):
    """Pre-norm transformer encoder layer over the prompt tokens."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, h: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        y = self.norm1(h)
        h = h + self.attn(y, y, y, key_padding_mask=key_padding_mask, need_weights=False)[0]
        return h + self.mlp(self.norm2(h))


class ToyResBlock(nn.Module):
    """GroupNorm-SiLU-conv x2 with a FiLM (scale, shift) from the time/text embedding."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.film = nn.Linear(temb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(temb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class ToyAttention(nn.Module):
    """Optional self-attention over pixels, then cross-attention from pixels to the prompt."""

    def __init__(self, ch: int, ctx_dim: int, heads: int, self_attn: bool):
        super().__init__()
        self.self_attn = None
        if self_attn:
            self.norm_s = nn.GroupNorm(_groups(ch), ch)
            self.self_attn = nn.MultiheadAttention(ch, heads, batch_first=True)
        self.norm_c = nn.GroupNorm(_groups(ch), ch)
        self.cross_attn = nn.MultiheadAttention(ch, heads, kdim=ctx_dim, vdim=ctx_dim, batch_first=True)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, ctx_mask: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        if self.self_attn is not None:
            y = self.norm_s(x).flatten(2).transpose(1, 2)
            y = self.self_attn(y, y, y, need_weights=False)[0]
            x = x + y.transpose(1, 2).reshape(b, c, hh, ww)
        y = self.norm_c(x).flatten(2).transpose(1, 2)
        y = self.cross_attn(y, ctx, ctx, key_padding_mask=ctx_mask, need_weights=False)[0]
        return x + y.transpose(1, 2).reshape(b, c, hh, ww)


class ToyUNetBlock(nn.Module):
    """One UNet unit: ``ToyResBlock`` then (optionally) ``ToyAttention``. The FSDP2 unit."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, ctx_dim: int, heads: int,
                 attention: bool, self_attention: bool):
        super().__init__()
        self.res = ToyResBlock(in_ch, out_ch, temb_dim)
        self.attn = ToyAttention(out_ch, ctx_dim, heads, self_attention) if attention else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor, ctx: torch.Tensor,
                ctx_mask: torch.Tensor) -> torch.Tensor:
        x = self.res(x, temb)
        if self.attn is not None:
            x = self.attn(x, ctx, ctx_mask)
        return x


class ToyFlowModel(ModelMixin, ConfigMixin):
    """Text-conditioned velocity model ``v(x_s, s, tokens)`` for 32x32 RGB.

    Args:
        sample_size: image side (32).
        in_channels: image channels (3).
        block_out_channels: channels per resolution level after the 2x2 pixel-unshuffle stem
            (level 0 at sample_size/2, each further level halves the resolution).
        layers_per_block: ``ToyUNetBlock`` units per level on the down path (up path: +1).
        attention_levels: per level, whether the blocks cross-attend to the prompt.
        self_attention_levels: per level, whether the blocks also self-attend over pixels.
        vocab_size / max_tokens: of :func:`cdm_bench.toy.world.tokenize` (pad id 0).
        text_dim / text_layers / heads: the prompt encoder.
        temb_dim: width of the time (+ pooled text) embedding used for FiLM.
        up_layers_per_block: ``ToyUNetBlock`` units per level on the up path
            (default ``layers_per_block + 1``); each takes one skip connection, any skips
            left over at a level are concatenated into its last unit.
        mid_layers: units at the lowest resolution between the two paths.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["ToyUNetBlock", "ToyTextLayer"]

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 3,
        block_out_channels: tuple = (64, 128, 128),
        layers_per_block: int = 1,
        attention_levels: tuple | None = None,
        self_attention_levels: tuple | None = None,
        vocab_size: int = 32,
        max_tokens: int = 16,
        text_dim: int = 64,
        text_layers: int = 2,
        heads: int = 4,
        temb_dim: int = 128,
        up_layers_per_block: int | None = None,
        mid_layers: int = 2,
    ):
        super().__init__()
        n = len(block_out_channels)
        attention_levels = tuple(attention_levels) if attention_levels is not None else (
            tuple(i > 0 for i in range(n)))
        self_attention_levels = tuple(self_attention_levels) if self_attention_levels is not None else (
            tuple(i == n - 1 for i in range(n)))
        if len(attention_levels) != n or len(self_attention_levels) != n:
            raise ValueError("attention_levels / self_attention_levels need one entry per level")
        self.gradient_checkpointing = False

        # prompt encoder
        self.token_embed = nn.Embedding(vocab_size, text_dim, padding_idx=0)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_tokens + 1, text_dim))
        self.register_token = nn.Parameter(torch.zeros(1, 1, text_dim))
        nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.register_token, std=0.02)
        self.text_blocks = nn.ModuleList([ToyTextLayer(text_dim, heads) for _ in range(text_layers)])
        self.text_norm = nn.LayerNorm(text_dim)

        # time + pooled-text embedding
        self.time_mlp = nn.Sequential(nn.Linear(temb_dim, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.text_pool = nn.Linear(text_dim, temb_dim)

        # UNet on the 2x2 pixel-unshuffled image
        ch0 = block_out_channels[0]
        self.conv_in = nn.Conv2d(4 * in_channels, ch0, 3, padding=1)

        def block(i, o, lvl):
            return ToyUNetBlock(i, o, temb_dim, text_dim, heads, attention_levels[lvl], self_attention_levels[lvl])

        self.down_blocks = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        skip_chs = [ch0]
        ch = ch0
        for lvl, out in enumerate(block_out_channels):
            for _ in range(layers_per_block):
                self.down_blocks.append(block(ch, out, lvl))
                ch = out
                skip_chs.append(ch)
            if lvl < n - 1:
                self.downsamplers.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_chs.append(ch)
        self.mid_blocks = nn.ModuleList([block(ch, ch, n - 1) for _ in range(mid_layers)])
        self.up_blocks = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        self._up_skips: list[int] = []  # skips consumed by each up unit
        for lvl in reversed(range(n)):
            out = block_out_channels[lvl]
            n_up = self._n_up()
            per_level = layers_per_block + 1  # skips produced at this level
            counts = [1] * n_up
            counts[-1] += per_level - n_up
            for c in counts:
                extra = sum(skip_chs.pop() for _ in range(c))
                self.up_blocks.append(block(ch + extra, out, lvl))
                self._up_skips.append(c)
                ch = out
            if lvl > 0:
                self.upsamplers.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.norm_out = nn.GroupNorm(_groups(ch), ch)
        self.conv_out = nn.Conv2d(ch, 4 * in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def _n_up(self) -> int:
        n_up = self.config.up_layers_per_block
        n_up = self.config.layers_per_block + 1 if n_up is None else int(n_up)
        if not 1 <= n_up <= self.config.layers_per_block + 1:
            raise ValueError("up_layers_per_block must be in [1, layers_per_block + 1]")
        return n_up

    # ------------------------------------------------------------------------------------
    def _run(self, module: nn.Module, *args):
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(module, *args)
        return module(*args)

    def encode_text(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens (B, L) int64 -> (context (B, 1+L, D), key-padding mask (B, 1+L), pooled (B, D))."""
        b, length = tokens.shape
        if length > self.config.max_tokens:
            raise ValueError(f"{length} tokens > max_tokens={self.config.max_tokens}")
        pad = tokens == 0
        h = torch.cat([self.register_token.expand(b, -1, -1), self.token_embed(tokens)], dim=1)
        h = h + self.pos_embed[:, : length + 1]
        mask = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=tokens.device), pad], dim=1)
        for layer in self.text_blocks:
            h = self._run(layer, h, mask)
        h = self.text_norm(h)
        keep = (~mask).to(h.dtype)[..., None]
        pooled = (h * keep).sum(1) / keep.sum(1)
        return h, mask, pooled

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """x (B,3,H,W) in data space, sigma (B,) in [0,1], tokens (B,L) int64 -> v (B,3,H,W)."""
        b = x.shape[0]
        if sigma.ndim == 0:
            sigma = sigma.expand(b)
        ctx, mask, pooled = self.encode_text(tokens.to(x.device))
        dtype = x.dtype
        ctx = ctx.to(dtype)
        temb = self.time_mlp(sinusoidal_embedding(sigma.to(x.device) * 1000.0, self.config.temb_dim).to(dtype))
        temb = F.silu(temb + self.text_pool(pooled).to(dtype))

        h = self.conv_in(F.pixel_unshuffle(x, 2))
        skips = [h]
        lpb = self.config.layers_per_block
        it = iter(self.down_blocks)
        for lvl in range(len(self.config.block_out_channels)):
            for _ in range(lpb):
                h = self._run(next(it), h, temb, ctx, mask)
                skips.append(h)
            if lvl < len(self.downsamplers):
                h = self.downsamplers[lvl](h)
                skips.append(h)
        for blk in self.mid_blocks:
            h = self._run(blk, h, temb, ctx, mask)
        it = iter(zip(self.up_blocks, self._up_skips))
        n = len(self.config.block_out_channels)
        for j, lvl in enumerate(reversed(range(n))):
            for _ in range(self._n_up()):
                blk, c = next(it)
                h = self._run(blk, torch.cat([h] + [skips.pop() for _ in range(c)], dim=1), temb, ctx, mask)
            if lvl > 0:
                h = self.upsamplers[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.conv_out(F.silu(self.norm_out(h)))
        return F.pixel_shuffle(h, 2)
