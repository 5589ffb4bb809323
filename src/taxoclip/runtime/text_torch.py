"""The text tower in torch, trimmed to the tokens a batch uses.

CLIP's text transformer is causal and pools at the end-of-text token (``argmax`` of the
ids), so positions after the longest caption's end token change nothing that is read:
running ``L = max(end position) + 1`` positions instead of the full context gives the same
features (to float rounding) at a fraction of the cost — 80 templates × a taxon name are
~15-30 tokens of 77. :func:`encode_text_trimmed` does that for open_clip's ``CLIP`` and
``CustomTextCLIP`` text towers and falls back to ``encode_text`` for anything else
(non-causal towers, CLS or EOS pooling, Hugging Face text models).

:class:`TextStep` runs the same tower on a key/value cache — one block of caption
positions on top of the keys/values earlier blocks left — so captions that share a prefix
encode it once (:mod:`.prefix`); the export traces it to ``text_step.onnx``. It knows
open_clip's residual blocks with ``nn.MultiheadAttention`` or open_clip's own ``Attention``
(not scaled-cosine); :func:`can_step` is false for any other tower, which then runs whole
captions.
"""

from __future__ import annotations

import torch

from .prefix import KVShape


def _text_parts(model: torch.nn.Module):
    """The module holding the text transformer's parts, and its pool type; None if the
    tower cannot be trimmed safely."""
    text = getattr(model, "text", None)
    holder = text if text is not None and hasattr(text, "token_embedding") else model
    pool = getattr(holder, "text_pool_type", None) or getattr(holder, "pool_type", None)
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final")
    if not all(getattr(holder, name, None) is not None for name in needed):
        return None
    if getattr(holder, "attn_mask", None) is None or pool != "argmax":
        return None
    if getattr(holder, "cls_emb", None) is not None:
        return None
    return holder


class TrimmedText(torch.nn.Module):
    """``tokens (B, L) → encode_text features (B, D)`` for any ``L ≤ context``: the
    positional embedding and causal mask are cut to ``L`` (what the ONNX export traces,
    so the exported text tower takes trimmed token arrays too)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        holder = _text_parts(model)
        if holder is None:
            raise ValueError("this text tower cannot be trimmed")
        self.holder = holder

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.holder
        length = tokens.shape[1]
        cast = h.transformer.get_cast_dtype() if hasattr(h.transformer, "get_cast_dtype") else None
        x = h.token_embedding(tokens)
        if cast is not None:
            x = x.to(cast)
        x = x + h.positional_embedding[:length].to(x.dtype)
        x = h.transformer(x, attn_mask=h.attn_mask[:length, :length])
        x = h.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        projection = getattr(h, "text_projection", None)
        if projection is not None:
            x = projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection
        return x


def can_trim(model: torch.nn.Module) -> bool:
    return _text_parts(model) is not None


def trimmed_length(tokens) -> int:
    """Positions a batch needs: one past the last end-of-text token (the highest id)."""
    return int(tokens.argmax(-1).max()) + 1


@torch.inference_mode()
def encode_text_trimmed(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)`` computed on only the positions the batch uses."""
    if not can_trim(model):
        return model.encode_text(tokens)
    return TrimmedText(model)(tokens[:, : trimmed_length(tokens)])


def _attention_forward(mha: torch.nn.MultiheadAttention):
    """``nn.MultiheadAttention.forward`` (self-attention, no weights returned) written with
    shape-free ops, so a traced ONNX graph keeps the sequence length dynamic (the stock
    forward bakes the example's length into its reshapes)."""
    import torch.nn.functional as F

    def forward(query, key=None, value=None, need_weights=False, attn_mask=None, **_):
        x = query if mha.batch_first else query.transpose(0, 1)  # (B, L, E)
        q, k, v = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (mha.num_heads, -1)).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = mha.out_proj(out.transpose(1, 2).flatten(2))
        return (out if mha.batch_first else out.transpose(0, 1)), None

    return forward


class dynamic_length_attention:  # noqa: N801 - a context manager, used like a function
    """Within the block, every ``nn.MultiheadAttention`` under ``module`` runs
    :func:`_attention_forward` (for ONNX export of the text tower)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.layers = [m for m in module.modules() if isinstance(m, torch.nn.MultiheadAttention)]

    def __enter__(self):
        for layer in self.layers:
            layer.forward = _attention_forward(layer)
        return self

    def __exit__(self, *exc) -> None:
        for layer in self.layers:
            del layer.forward


# --------------------------------------------------------------------------- prefix cache


def _attention_parts(block: torch.nn.Module):
    """(attention module, whether it is ``nn.MultiheadAttention``) of a residual block whose
    attention :class:`TextStep` can run with past keys/values; None otherwise (cross or
    scaled-cosine attention, separate q/k/v projections, added k/v biases)."""
    attn = getattr(block, "attn", None)
    needed = ("ln_1", "ln_2", "mlp", "ls_1", "ls_2")
    if attn is None or not all(getattr(block, name, None) is not None for name in needed):
        return None
    if hasattr(block, "ln_1_kv"):
        return None
    if isinstance(attn, torch.nn.MultiheadAttention):
        plain = attn._qkv_same_embed_dim and attn.bias_k is None and not attn.add_zero_attn
        return (attn, True) if plain else None
    has = ("in_proj_weight", "in_proj_bias", "out_proj", "num_heads", "ln_q", "ln_k")
    has += ("head_scale", "ln_inner")
    if not all(hasattr(attn, name) for name in has) or getattr(attn, "logit_scale", 1) is not None:
        return None
    return attn, False


def _step_parts(model: torch.nn.Module):
    """The text holder (as :func:`_text_parts`) if every block can take past keys/values."""
    holder = _text_parts(model)
    blocks = getattr(getattr(holder, "transformer", None), "resblocks", None)
    if holder is None or not blocks:
        return None
    return holder if all(_attention_parts(b) is not None for b in blocks) else None


def can_step(model: torch.nn.Module) -> bool:
    """Whether :class:`TextStep` (the prefix key/value cache) can run this text tower."""
    return _step_parts(model) is not None


def kv_shape(model: torch.nn.Module) -> KVShape | None:
    holder = _step_parts(model)
    if holder is None:
        return None
    blocks = holder.transformer.resblocks
    attn, _ = _attention_parts(blocks[0])
    width = attn.in_proj_weight.shape[1]
    return KVShape(len(blocks), int(attn.num_heads), int(width // attn.num_heads))


class TextStep(torch.nn.Module):
    """One block of caption positions through the text tower, on top of past keys/values.

    ``(tokens (B, N), positions (B, N), past (layers, 2, B, H, P, dh), mask (B, N, P + N),
    pool (B,)) → (features (B, D), present (layers, 2, B, H, N, dh))``: ``positions`` are
    the block's absolute positions (the positional embedding's rows), ``mask`` is added to
    the attention logits (0 where a query may look: the row's own past keys, and the
    block's keys up to its own position; -inf elsewhere), ``pool`` the block index of each
    row's end token; ``features`` are ``encode_text``'s there (not normalised; meaningless
    for rows whose end token is not in the block) and ``present`` the block's keys/values
    for later blocks. The tower is causal, so a position's keys/values depend on the
    tokens up to it only: feeding a caption's prefix once and its suffixes on top gives
    ``encode_text``'s features to float rounding (tests/runtime/test_text_prefix.py).
    This is the module the export traces to ``text_step.onnx``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        holder = _step_parts(model)
        if holder is None:
            raise ValueError("this text tower cannot run on a key/value cache")
        self.holder = holder

    def forward(self, tokens, positions, past, mask, pool):
        h = self.holder
        cast = h.transformer.get_cast_dtype() if hasattr(h.transformer, "get_cast_dtype") else None
        x = h.token_embedding(tokens)
        if cast is not None:
            x = x.to(cast)
        x = x + h.positional_embedding[positions].to(x.dtype)
        mask = mask.unsqueeze(1).to(x.dtype)  # (B, 1, N, P + N): the same for every head
        presents = []
        for layer, block in enumerate(h.transformer.resblocks):
            attn, stock = _attention_parts(block)
            y, kv = _attend(attn, stock, block.ln_1(x), past[layer], mask)
            if not stock:
                y = block.ln_attn(y) if hasattr(block, "ln_attn") else y
            x = x + block.ls_1(y)
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
            presents.append(kv)
        x = h.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), pool]
        projection = getattr(h, "text_projection", None)
        if projection is not None:
            x = projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection
        return x, torch.stack(presents)


def _attend(attn, stock: bool, x, past, mask):
    """Self-attention of block ``x`` (B, N, E) over ``past`` (2, B, H, P, dh) and itself:
    the output (B, N, E) and the block's keys/values (2, B, H, N, dh)."""
    import torch.nn.functional as F

    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.unflatten(-1, (attn.num_heads, -1)).transpose(1, 2) for t in (q, k, v))
    if not stock:  # open_clip's Attention: optional per-head q/k norms, as it applies them
        q, k = attn.ln_q(q), attn.ln_k(k)
    keys = torch.cat([past[0], k], dim=2)
    values = torch.cat([past[1], v], dim=2)
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
    if not stock and attn.head_scale is not None:
        out = out * attn.head_scale
    out = out.transpose(1, 2).flatten(2)
    if not stock:
        out = attn.ln_inner(out)
    return attn.out_proj(out), torch.stack([k, v])


class TorchTextEncoder:
    """The torch text tower behind the interface of ``OnnxTextEncoder`` (``tokenize`` →
    numpy ids; ``encode_tokens`` of a trimmed id array → numpy features; where the tower
    can run on a key/value cache, ``kv_shape`` and ``encode_block``: :class:`TextStep`,
    so :func:`~taxoclip.runtime.text.encode_captions` encodes shared prefixes once)."""

    runtime = "torch"

    def __init__(self, model: torch.nn.Module, tokenizer, device: str | torch.device = "cpu"):
        self.model, self.tokenizer, self.device = model, tokenizer, torch.device(device)
        self.kv_shape = kv_shape(model)
        self._step = TextStep(model) if self.kv_shape is not None else None

    def tokenize(self, texts):
        return self.tokenizer(list(texts)).numpy()

    @torch.inference_mode()
    def encode_tokens(self, tokens, normalize: bool = True):
        tensor = torch.from_numpy(tokens).to(self.device)
        if can_trim(self.model):
            features = TrimmedText(self.model)(tensor).float()
        else:  # the full context, as encode_text wants it
            width = int(getattr(self.tokenizer, "context_length", tensor.shape[1]) or 0)
            if width > tensor.shape[1]:
                tensor = torch.nn.functional.pad(tensor, (0, width - tensor.shape[1]))
            features = self.model.encode_text(tensor).float()
        if normalize:
            features = torch.nn.functional.normalize(features, dim=-1)
        return features.cpu().numpy()

    @torch.inference_mode()
    def encode_block(self, tokens, positions, past, mask, pool):
        """:class:`TextStep` on numpy arrays: (features, present), float32 numpy."""
        if self._step is None:
            raise ValueError("this text tower cannot run on a key/value cache")
        args = (torch.from_numpy(a).to(self.device) for a in (tokens, positions, past, mask, pool))
        features, present = self._step(*args)
        return features.float().cpu().numpy(), present.float().cpu().numpy()
