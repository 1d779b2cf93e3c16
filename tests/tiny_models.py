"""Tiny real models for tests: a BPE tokenizer trained on the fly with ``tokenizers`` and a random
2-layer Llama. Nothing is downloaded. Built once per session by the ``tiny_model_dir`` fixture.
"""
from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]

CORPUS = [
    "This movie was great and I loved the acting.",
    "A dull, boring film with a terrible plot.",
    "Positive negative neutral label sentiment review.",
    "Classify the sentiment of the review. Answer with one word: positive or negative.",
    "The ticket says my order 12345 arrived broken; please refund me. Priority high.",
    "Summarize the text in one sentence.",
    "You are a helpful assistant. system user assistant",
    '{"name": "value", "priority": "low", "order_id": 42}',
] * 20


def build_tokenizer(vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(path: Path, *, layers: int = 2, hidden: int = 32, seed: int = 0, vocab_size: int = 512) -> Path:
    """Save a random tiny Llama + tokenizer to ``path`` (a folder ``from_pretrained`` loads)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tok = build_tokenizer(vocab_size)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_words_likely(path: Path, words: list[str], scale: float = 30.0) -> Path:
    """Make a saved tiny model say one of ``words`` (e.g. the labels) as its next token: their
    (tied) embedding rows become +/- ``scale`` x one unit vector, so on most inputs the one the
    hidden state leans towards tops a random model's near-zero logits (30: about 4 of 5 prompts),
    while other text stays likely enough to write. Saves the model in place; returns ``path``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(model.config.hidden_size, generator=gen)
    direction = scale * direction / direction.norm()
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        for i, word in enumerate(words):
            for variant in (word, " " + word):
                ids = tok(variant, add_special_tokens=False)["input_ids"]
                if len(ids) == 1:  # a word split in pieces ("p" + "ositive") would make the pieces likely
                    emb[ids[0]] = direction * (1 if i % 2 == 0 else -1)
    model.save_pretrained(path)
    return path
