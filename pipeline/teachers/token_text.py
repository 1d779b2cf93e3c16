"""Token id -> (text, UTF-8 bytes), the way the OpenAI API reports a token, for the in-process
backends (hf, vllm). Used to fill ``TokenLogprob.token`` / ``.bytes`` from a tokenizer.

A byte-level BPE token (GPT-2, Llama-3, SmolLM2) may be half of a UTF-8 character, so its text is
not always decodable on its own; its bytes are exact, recovered from the byte-to-unicode alphabet.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    # The GPT-2 byte<->unicode table every byte-level BPE uses; transformers keeps it here.
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {ch: b for b, ch in bytes_to_unicode().items()}


def _is_byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    return decoder is not None and "ByteLevel" in type(decoder).__name__ + repr(decoder)[:40]


class TokenText:
    """Cached per-id text and bytes for one tokenizer."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._byte_level = _is_byte_level(tokenizer)
        self._cache: dict[int, tuple[str, list[int]]] = {}

    def __call__(self, token_id: int) -> tuple[str, list[int]]:
        hit = self._cache.get(token_id)
        if hit is None:
            hit = self._cache[token_id] = self._compute(int(token_id))
        return hit

    def _compute(self, token_id: int) -> tuple[str, list[int]]:
        # Special tokens keep their text (a top-k "<|im_end|>" should read as such, as in vLLM).
        text = self.tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        raw = self.tokenizer.convert_ids_to_tokens(token_id)
        if self._byte_level and isinstance(raw, str) and token_id not in self.tokenizer.all_special_ids:
            table = _unicode_to_byte()
            if all(ch in table for ch in raw):
                return text, [table[ch] for ch in raw]
        if isinstance(raw, str) and len(raw) == 6 and raw.startswith("<0x") and raw.endswith(">"):
            return text, [int(raw[3:5], 16)]  # SentencePiece byte-fallback token
        return text, list(text.encode("utf-8"))


def ids_before(tokenizer: Any, ids: list[int], n_chars: int) -> list[int]:
    """The longest prefix of ``ids`` whose text fits in the first ``n_chars`` characters: the
    tokens that lie wholly before a stop string cut at ``n_chars``."""
    n = 0
    while n < len(ids) and len(tokenizer.decode(ids[:n + 1], skip_special_tokens=True)) <= n_chars:
        n += 1
    return ids[:n]


def local_tokenizer(model: str) -> Any | None:
    """The tokenizer of ``model`` when it is on this machine (the embedded model, a model folder, or
    the Hugging Face cache), else None. Never downloads. For a server's served model name."""
    from pipeline.errors import ConfigError
    from pipeline.local_models import resolve_model_path

    try:
        source: Any = resolve_model_path(model)
    except ConfigError:
        source = model  # maybe a hub id already in the local HF cache
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, ImportError):
        return None


def fill_token_texts(positions: list, tokenizer: Any) -> list:
    """Give every token that has an id its text and exact UTF-8 bytes from ``tokenizer``, in place.

    For vLLM's ``return_tokens_as_token_ids``: its top-k alternatives arrive as ``token_id:N`` with
    the bytes of that very string, and the chosen token's bytes are its decoded text re-encoded
    (a half character becomes U+FFFD), so neither is the token itself."""
    text_of = TokenText(tokenizer)
    for pos in positions:
        for tok in (pos, *pos.top):
            if tok.id is not None:
                tok.token, tok.bytes = text_of(tok.id)
    return positions
