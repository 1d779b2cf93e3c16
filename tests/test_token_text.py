"""Token text and bytes from a tokenizer: exact bytes for half characters, and repairing vLLM's
``token_id:N`` top-k entries."""
from __future__ import annotations

from pipeline.records import TokenLogprob, TokenPosition
from pipeline.teachers.token_text import TokenText, fill_token_texts, local_tokenizer


def test_byte_level_tokens_give_exact_bytes_even_for_half_characters(tiny_model_dir):
    tok = local_tokenizer(str(tiny_model_dir))
    text_of = TokenText(tok)
    ids = tok("café ☕ ok", add_special_tokens=False)["input_ids"]
    assert b"".join(bytes(text_of(i)[1]) for i in ids) == "café ☕ ok".encode()
    assert any("\ufffd" in text_of(i)[0] for i in ids)  # some token is only part of a character
    eos_text, eos_bytes = text_of(tok.eos_token_id)
    assert eos_text == "<|im_end|>" and bytes(eos_bytes) == b"<|im_end|>"


def test_vllm_token_id_entries_get_their_real_text_and_bytes(tiny_model_dir):
    tok = local_tokenizer(str(tiny_model_dir))
    good, other = tok("great", add_special_tokens=False)["input_ids"][0], tok.eos_token_id
    as_vllm_sends = TokenPosition(  # what the openai backend parsed from a vLLM server
        token=tok.decode([good]), logprob=-0.1, id=good, bytes=list(b"\xef\xbf\xbd"),
        top=[TokenLogprob(token=f"token_id:{i}", logprob=lp, id=i, bytes=list(f"token_id:{i}".encode()))
             for i, lp in ((good, -0.1), (other, -2.5))],
    )
    [fixed] = fill_token_texts([as_vllm_sends], tok)
    assert [c.token for c in fixed.top] == [tok.decode([good]), "<|im_end|>"]
    assert bytes(fixed.bytes) == tok.decode([good]).encode() and bytes(fixed.top[1].bytes) == b"<|im_end|>"
    assert [c.logprob for c in fixed.top] == [-0.1, -2.5]


def test_a_model_not_on_this_machine_has_no_local_tokenizer(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert local_tokenizer("some-org/not-downloaded-model") is None
