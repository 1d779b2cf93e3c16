"""SFTConfig defaults on a CPU, and the user's settings winning over them."""
from __future__ import annotations

from pipeline.training.arguments import build_sft_config


def test_cpu_defaults_turn_off_bf16_and_activation_checkpointing(tmp_path):
    cfg = build_sft_config(tmp_path, {}, {}, task_file="task.yaml")
    assert cfg.bf16 is False and cfg.fp16 is False
    assert cfg.gradient_checkpointing is False  # TRL's default is True: ~30% more compute for memory a CPU has


def test_task_and_command_line_settings_override_the_defaults(tmp_path):
    cfg = build_sft_config(tmp_path, {"gradient_checkpointing": True, "learning_rate": 1e-4},
                           {"learning_rate": 3e-4}, task_file="task.yaml")
    assert cfg.gradient_checkpointing is True and cfg.learning_rate == 3e-4


def test_set_no_is_the_string_no_not_false():
    from pipeline.training.arguments import parse_set_overrides

    assert parse_set_overrides(["save_strategy=no", "bf16=false", "packing=True"]) == {
        "save_strategy": "no", "bf16": False, "packing": True}


def test_exponent_numbers_are_floats_on_the_command_line_and_in_task_yaml(tmp_path):
    """`--set learning_rate=5e-6` and `learning_rate: 1e-4` in task.yaml: PyYAML (YAML 1.1) read
    both as strings, SFTConfig took the string and training stopped with a TypeError traceback once
    the model had loaded. They are floats, as in YAML 1.2 and JSON; what is not a number stays text."""
    from pipeline.config.task import load_task
    from pipeline.training.arguments import parse_set_overrides

    got = parse_set_overrides(["learning_rate=5e-6", "weight_decay=1E-2", "max_steps=20", "run_name=1e",
                               "warmup_ratio=.1", "hub_model_id=1.2.3"])
    assert got == {"learning_rate": 5e-6, "weight_decay": 0.01, "max_steps": 20, "run_name": "1e",
                   "warmup_ratio": 0.1, "hub_model_id": "1.2.3"}
    assert isinstance(got["learning_rate"], float) and isinstance(got["max_steps"], int)
    cfg = build_sft_config(tmp_path, {"learning_rate": 1e-4}, {"learning_rate": got["learning_rate"]},
                           task_file="task.yaml", quiet=True)
    assert cfg.learning_rate == 5e-6

    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "user.j2").write_text("{{ text }}")
    (folder / "inputs.jsonl").write_text('{"text": "a"}\n')
    (folder / "task.yaml").write_text(
        "name: t\nteacher: {backend: openai, model: gpt-4o-mini, params: {top_p: 9e-1, max_tokens: 8}}\n"
        "inputs: {source: {path: inputs.jsonl}}\noutput: {kind: label, labels: [a, b]}\n"
        "train: {temperature: 2e0, sft: {learning_rate: 1e-4}}\n")
    task = load_task(folder).config
    assert task.train.sft["learning_rate"] == 1e-4 and task.teacher.params["top_p"] == 0.9
    assert isinstance(task.teacher.params["max_tokens"], int) and task.train.temperature == 2.0


def test_text_where_sftconfig_wants_a_number_is_one_line_naming_the_field(tmp_path):
    import pytest

    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--set: learning_rate: '1e-4x' is not a number"):
        build_sft_config(tmp_path, {}, {"learning_rate": "1e-4x"}, task_file="task.yaml", quiet=True)
    with pytest.raises(ConfigError, match=r"task.yaml: train.sft: max_length: 'long' is not a number"):
        build_sft_config(tmp_path, {"max_length": "long"}, {}, task_file="task.yaml", quiet=True)
    cfg = build_sft_config(tmp_path, {"run_name": "1e", "lr_scheduler_type": "cosine"}, {}, task_file="task.yaml",
                           quiet=True)  # text fields keep text
    assert cfg.run_name == "1e"


def test_yes_and_no_in_a_boolean_field_are_booleans_and_other_text_is_refused(tmp_path):
    """YAML 1.2 leaves ``no`` text, and SFTConfig would take the string "no" (which is true) for
    ``bf16: no``; in SFTConfig's boolean fields yes/no/on/off are read as booleans, anything else is
    one line naming the field."""
    import pytest

    from pipeline.errors import ConfigError
    from pipeline.training.arguments import parse_set_overrides

    cfg = build_sft_config(tmp_path, {"logging_first_step": "yes", "save_only_model": "on"},
                           parse_set_overrides(["remove_unused_columns=no", "disable_tqdm=Off"]),
                           task_file="task.yaml", quiet=True)
    assert cfg.logging_first_step is True and cfg.save_only_model is True
    assert cfg.remove_unused_columns is False and cfg.disable_tqdm is False
    with pytest.raises(ConfigError, match=r"task.yaml: train.sft: packing: 'maybe' is not a boolean; write true or false"):
        build_sft_config(tmp_path, {"packing": "maybe"}, {}, task_file="task.yaml", quiet=True)
