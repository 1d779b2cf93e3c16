"""bench/width_prune.py's narrowing: the refit that makes a narrowed layer follow its teacher, and the
elimination that picks which neurons to keep."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def _texts():
    return ["This movie was great and I loved the acting.", "A dull, boring film with a terrible plot.",
            "Summarize the text in one sentence.", "The ticket says my order 12345 arrived broken."] * 4


def _last_states(model, tok, texts):
    from pipeline.evaluation.student import _positions, encode

    with torch.inference_mode():
        enc = encode(tok, texts)
        return model.model(**enc, position_ids=_positions(enc["attention_mask"])).last_hidden_state[:, -1]


def _contributions(model, tok, texts):
    """What the layers add to the embeddings at every real position (the residual stream is mostly
    embedding in a random tiny model, so comparing states would hide a wrong refit)."""
    from pipeline.evaluation.student import _positions, encode

    with torch.inference_mode():
        enc = encode(tok, texts)
        states = []
        hook = model.model.norm.register_forward_hook(lambda m, i, o: states.append(i[0]))
        out = model.model(**enc, position_ids=_positions(enc["attention_mask"]), output_hidden_states=True)
        hook.remove()
        return (states[0] - out.hidden_states[0])[enc["attention_mask"].bool()]


def test_narrowing_to_the_full_width_gives_back_the_teacher(tiny_model_dir):
    """Every group and neuron kept: the refitted projections reproduce the teacher's states, through
    the same attention (so the streams, heads and right padding are handled as the teacher runs them)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.width_prune import narrow

    tok = AutoTokenizer.from_pretrained(tiny_model_dir, padding_side="left")
    teacher = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    cfg = teacher.config
    full = narrow(teacher, tok, _texts(), cfg.num_key_value_heads, cfg.intermediate_size, batch_size=5, log=lambda _: None)
    t, s = _contributions(teacher, tok, _texts()[:4]), _contributions(full, tok, _texts()[:4])
    assert float((s - t).norm() / t.norm()) < 1e-3


def test_a_narrowed_student_is_a_plain_llama_of_the_asked_width(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.width_prune import narrow

    tok = AutoTokenizer.from_pretrained(tiny_model_dir, padding_side="left")
    teacher = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    student = narrow(teacher, tok, _texts(), 1, 16, log=lambda _: None)
    student.save_pretrained(tmp_path / "s")
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "s").eval()
    assert (back.config.num_key_value_heads, back.config.intermediate_size) == (1, 16)
    assert back.config.num_hidden_layers == teacher.config.num_hidden_layers
    assert back.model.layers[0].mlp.down_proj.weight.shape == (teacher.config.hidden_size, 16)
    assert torch.isfinite(_last_states(back, tok, _texts()[:4])).all()


def test_elimination_keeps_the_columns_the_target_needs():
    from bench.width_prune import eliminate

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 40, generator=gen, dtype=torch.float64)
    y = x[:, [3, 17, 29]] @ torch.randn(3, 5, generator=gen, dtype=torch.float64)
    y += 0.01 * torch.randn(2000, 5, generator=gen, dtype=torch.float64)
    keep = eliminate(x.T @ x, x.T @ y, keep=3, chunk=8)
    assert keep.tolist() == [3, 17, 29]
