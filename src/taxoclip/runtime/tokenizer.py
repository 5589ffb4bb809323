"""open_clip's ``SimpleTokenizer`` (OpenAI CLIP's BPE) without torch, for ONNX text towers.

The same algorithm as ``open_clip.tokenizer.SimpleTokenizer`` with ``clean="lower"``
(ftfy, HTML unescape, whitespace collapsed, lower case; the same regex; byte-level BPE),
reading its merges from the exported folder's ``tokenizer.json``; tests hold the ids equal
to open_clip's. Output: int64 (N, context_length), start token, ids, end token, zero
padding; longer texts are truncated with the end token kept last (as open_clip).
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from taxoclip.errors import InputError

KIND = "openai-clip-bpe"


@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def _clean(text: str) -> str:
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).strip().lower()


class BPETokenizer:
    def __init__(self, merges: Sequence[Sequence[str]], special: Sequence[str]) -> None:
        import regex

        merges = [tuple(m) for m in merges]
        vocab = list(bytes_to_unicode().values())
        vocab = vocab + [v + "</w>" for v in vocab]
        vocab.extend("".join(m) for m in merges)
        vocab.extend(special)
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.cache = {t: t for t in special}
        self.sot, self.eot = self.encoder[special[0]], self.encoder[special[1]]
        self.pat = regex.compile(
            "|".join(special) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self.byte_encoder = bytes_to_unicode()

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"tokenizer {path}: cannot read ({exc})") from exc
        if data.get("kind") != KIND:
            raise InputError(f"tokenizer {path}: kind {data.get('kind')!r}, expected {KIND!r}")
        return cls(data["merges"], data["special"])

    @staticmethod
    def save_from_open_clip(tokenizer, path: str | os.PathLike) -> bool:
        """Write ``tokenizer.json`` for an open_clip ``SimpleTokenizer``; False if the
        tokenizer is another kind (a Hugging Face one: the text tower stays torch)."""
        from open_clip.tokenizer import SimpleTokenizer, _clean_lower

        if (
            type(tokenizer) is not SimpleTokenizer
            or tokenizer.clean_fn is not _clean_lower
            or tokenizer.reduction_fn is not None
        ):
            return False
        merges = sorted(tokenizer.bpe_ranks, key=tokenizer.bpe_ranks.get)
        special = [tokenizer.decoder[i] for i in tokenizer.all_special_ids]
        data = {"kind": KIND, "special": special, "merges": [list(m) for m in merges]}
        Path(path).write_text(
            json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8"
        )
        return True

    def bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = (*token[:-1], token[-1] + "</w>")
        pairs = set(zip(word, word[1:], strict=False))
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = set(zip(word, word[1:], strict=False))
        out = " ".join(word)
        self.cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        ids = []
        for token in self.pat.findall(_clean(text)):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        return ids

    def __call__(self, texts: Sequence[str], context_length: int = 77) -> np.ndarray:
        out = np.zeros((len(texts), context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot, *self.encode(text), self.eot]
            if len(ids) > context_length:
                ids = ids[:context_length]
                ids[-1] = self.eot
            out[row, : len(ids)] = ids
        return out
