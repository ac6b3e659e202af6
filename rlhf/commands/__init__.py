"""Commands that are not training stages: `rlhf generate`, `rlhf eval`, `rlhf data`.

They build on the core (`rlhf/*.py`) and reach the built-in tasks only through the judge and task
registries, never by importing a stage.
"""
