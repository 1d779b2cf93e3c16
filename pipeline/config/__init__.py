"""The task schema: ``prompts/<task>/task.yaml`` loaded into pydantic models.

Every model forbids unknown keys, so a typo is an error, not a silent default. One section per
module, each owned by the stage that reads it; ``task.py`` assembles them and loads the file.
"""
from pipeline.config.task import TaskConfig, TaskFolder, load_task

__all__ = ["TaskConfig", "TaskFolder", "load_task"]
