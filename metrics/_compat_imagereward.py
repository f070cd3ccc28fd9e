"""Compatibility patches that let the ``image-reward`` 1.5 package build on current libraries.

:func:`import_imagereward` imports the package with the patches below; each one is applied only
when its breakage is detected, so on the libraries the package was written for nothing changes.
No patch changes a number the model computes: they restore moved or removed helpers.

* torchvision: PyPI's CUDA torchvision beside a CPU torch fails to import
  (``operator torchvision::nms does not exist``); ``ImageReward`` imports its transforms at
  import time -> :func:`metrics._compat_torchvision.ensure_torchvision`.
* ``transformers.modeling_utils.{apply_chunking_to_forward, prune_linear_layer,
  find_pruneable_heads_and_indices}``: ``ImageReward/models/BLIP/med.py`` imports them from
  there; transformers moved the first two to ``transformers.pytorch_utils`` and removed the
  third (used only to prune attention heads, which scoring never does) -> re-exported, and the
  third raises a clear ``NotImplementedError`` if it is ever called.
* ``BertModel.init_weights``: med.py's ``BertModel.__init__`` calls ``self.init_weights()``
  instead of ``post_init()``; transformers 5's ``init_weights`` then reads
  ``all_tied_weights_keys``, which only ``post_init`` sets (``AttributeError``) -> med.py's
  ``init_weights`` sets that mapping first, then runs transformers' own ``init_weights``.
* ``invert_attention_mask`` / ``get_head_mask``: transformers 5 removed these
  ``ModuleUtilsMixin`` methods that med.py's ``BertModel.forward`` calls -> restored on med.py's
  ``BertModel`` with the transformers 4 semantics (the mask inversion; no head mask).
* ``BertTokenizer.additional_special_tokens_ids``: BLIP's ``init_tokenizer`` reads it to find
  ``[ENC]``; transformers 5 renamed it ``extra_special_tokens_ids`` -> an alias property.
"""

from __future__ import annotations

import logging
from types import ModuleType

from metrics._compat_torchvision import ensure_torchvision

log = logging.getLogger(__name__)
_MOVED_HELPERS = ("apply_chunking_to_forward", "prune_linear_layer")
_REMOVED_HELPER = "find_pruneable_heads_and_indices"

__all__ = ["import_imagereward"]


def import_imagereward() -> ModuleType:
    """``import ImageReward`` with every patch this environment needs (idempotent)."""
    ensure_torchvision()
    _patch_moved_helpers()
    import ImageReward
    from ImageReward.models.BLIP import med

    _patch_init_weights(med)
    _patch_mask_helpers(med)
    _patch_tokenizer_ids()
    return ImageReward


def _patch_moved_helpers() -> None:
    import transformers.modeling_utils as mu

    missing = [n for n in (*_MOVED_HELPERS, _REMOVED_HELPER) if not hasattr(mu, n)]
    if not missing:
        return
    import transformers.pytorch_utils as pu

    for name in _MOVED_HELPERS:
        if name in missing:
            setattr(mu, name, getattr(pu, name))
    if _REMOVED_HELPER in missing:
        setattr(mu, _REMOVED_HELPER, getattr(pu, _REMOVED_HELPER, _no_head_pruning))
    log.debug("image-reward compat: re-exported %s in transformers.modeling_utils", missing)


def _no_head_pruning(*args, **kwargs):
    raise NotImplementedError("ImageReward's BLIP head pruning needs transformers 4 "
                              "(find_pruneable_heads_and_indices was removed in transformers 5)")


def _init_weights_breaks(med: ModuleType) -> bool:
    """Build a 1-layer med.py BertModel: does ``init_weights`` fail on ``all_tied_weights_keys``?"""
    cfg = med.BertConfig(vocab_size=8, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                         intermediate_size=8, max_position_embeddings=8)
    try:
        med.BertModel(cfg, add_pooling_layer=False)
    except AttributeError as e:
        if "all_tied_weights_keys" in str(e):
            return True
        raise
    return False


def _patch_init_weights(med: ModuleType) -> None:
    if "init_weights" in vars(med.BertPreTrainedModel) or not _init_weights_breaks(med):
        return
    from transformers.modeling_utils import PreTrainedModel

    def init_weights(self):
        if "all_tied_weights_keys" not in vars(self):
            self.all_tied_weights_keys = self.get_expanded_tied_weights_keys(all_submodels=False)
        PreTrainedModel.init_weights(self)

    med.BertPreTrainedModel.init_weights = init_weights
    log.debug("image-reward compat: patched BertPreTrainedModel.init_weights")


def _invert_attention_mask(self, encoder_attention_mask):
    """transformers 4's ``ModuleUtilsMixin.invert_attention_mask``: 1/0 mask -> additive mask."""
    import torch

    if encoder_attention_mask.dim() == 3:
        extended = encoder_attention_mask[:, None, :, :]
    else:
        extended = encoder_attention_mask[:, None, None, :]
    extended = extended.to(dtype=self.dtype)
    return (1.0 - extended) * torch.finfo(self.dtype).min


def _get_head_mask(self, head_mask, num_hidden_layers, is_attention_chunked=False):
    """transformers 4's ``get_head_mask`` for the only case ImageReward uses (no head mask)."""
    if head_mask is not None:
        raise NotImplementedError("ImageReward compat: head_mask is not supported on transformers 5")
    return [None] * num_hidden_layers


def _patch_mask_helpers(med: ModuleType) -> None:
    for name, fn in (("invert_attention_mask", _invert_attention_mask), ("get_head_mask", _get_head_mask)):
        if not hasattr(med.BertModel, name):
            setattr(med.BertModel, name, fn)
            log.debug("image-reward compat: restored BertModel.%s", name)


def _patch_tokenizer_ids() -> None:
    from transformers import BertTokenizer

    if hasattr(BertTokenizer, "additional_special_tokens_ids"):
        return
    BertTokenizer.additional_special_tokens_ids = property(lambda self: self.extra_special_tokens_ids)
    log.debug("image-reward compat: aliased BertTokenizer.additional_special_tokens_ids")
