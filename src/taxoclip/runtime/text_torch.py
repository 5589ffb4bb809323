"""The text tower in torch, trimmed to the tokens a batch uses.

CLIP's text transformer is causal and pools at the end-of-text token (``argmax`` of the
ids), so positions after the longest caption's end token change nothing that is read:
running ``L = max(end position) + 1`` positions instead of the full context gives the same
features (to float rounding) at a fraction of the cost — 80 templates × a taxon name are
~15-30 tokens of 77. :func:`encode_text_trimmed` does that for open_clip's ``CLIP`` and
``CustomTextCLIP`` text towers and falls back to ``encode_text`` for anything else
(non-causal towers, CLS or EOS pooling, Hugging Face text models).
"""

from __future__ import annotations

import torch


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


class TorchTextEncoder:
    """The torch text tower behind the interface of ``OnnxTextEncoder`` (``tokenize`` →
    numpy ids; ``encode_tokens`` of a trimmed id array → numpy features)."""

    runtime = "torch"

    def __init__(self, model: torch.nn.Module, tokenizer, device: str | torch.device = "cpu"):
        self.model, self.tokenizer, self.device = model, tokenizer, torch.device(device)

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
