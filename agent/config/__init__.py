"""What a user writes down: scenarios (YAML), accelerator profiles and the
shared TOML reading and type checking that give file:line:field errors.

Depends only on :mod:`agent.errors`; the pipeline loader, which needs the stage
registry, lives with the stages (:mod:`agent.stages.pipeline`).
"""
