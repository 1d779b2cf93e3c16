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
