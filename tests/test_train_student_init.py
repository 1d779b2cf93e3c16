"""Student initialisation: DistilBERT-style half-depth copies of a local teacher."""
from __future__ import annotations

import pytest
import torch

from pipeline.config.train import StudentConfig
from pipeline.errors import ConfigError
from pipeline.training.student_init import build_student, from_teacher_layers


def _layer(model, i):
    return {k: v for k, v in model.model.layers[i].state_dict().items()}


def test_from_teacher_layers_keeps_every_other_layer_by_default(tiny_model_dir_4layers):
    from transformers import AutoModelForCausalLM

    teacher = AutoModelForCausalLM.from_pretrained(tiny_model_dir_4layers)
    model, src, info = build_student(StudentConfig(init="from_teacher_layers", teacher_model=str(tiny_model_dir_4layers)))
    assert info["layer_map"] == [0, 2] and model.config.num_hidden_layers == 2 and src == tiny_model_dir_4layers
    for new, old in [(0, 0), (1, 2)]:
        for name, value in _layer(model, new).items():
            assert torch.equal(value, _layer(teacher, old)[name]), (new, old, name)
    assert torch.equal(model.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    assert torch.equal(model.model.norm.weight, teacher.model.norm.weight)
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1]
    # the half-depth student runs and generates (its KV cache is indexed by the new positions)
    out = model.generate(torch.tensor([[1, 5, 9]]), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 6)


def test_layer_map_picks_the_named_layers_and_survives_a_save(tiny_model_dir_4layers, tmp_path):
    from transformers import AutoModelForCausalLM

    teacher = AutoModelForCausalLM.from_pretrained(tiny_model_dir_4layers)
    model = from_teacher_layers(tiny_model_dir_4layers, [1, 3])
    model.save_pretrained(tmp_path / "s")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "s")
    assert again.config.num_hidden_layers == 2 and again.config.distill_layer_map == [1, 3]
    for name, value in _layer(again, 1).items():
        assert torch.equal(value, _layer(teacher, 3)[name])


@pytest.mark.parametrize("layer_map, message", [([0, 9], "outside the teacher's layers 0..3"),
                                                 ([1, 1], "listed twice"), ([], "empty")])
def test_bad_layer_maps_are_config_errors(tiny_model_dir_4layers, layer_map, message):
    with pytest.raises(ConfigError, match=message):
        from_teacher_layers(tiny_model_dir_4layers, layer_map)


def test_a_missing_student_model_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="student.model"):
        build_student(StudentConfig(init="pretrained"))
    with pytest.raises(ConfigError, match="not a local folder|not a local model folder"):
        build_student(StudentConfig(init="pretrained", model=str(tmp_path / "nope")))
