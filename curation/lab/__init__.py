"""The project's lab: the synthetic world, benchmarks, the tiny CLIP's and heads' training, eval,
proxy-eval and the demo. The product (everything else under `curation/`) never imports it; only the
CLI does (checked by the import contracts in pyproject.toml)."""
