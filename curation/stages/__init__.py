"""Stages: the pipeline's logic, one per file. A stage never imports ray, the runner or the CLI."""
