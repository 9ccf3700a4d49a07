"""Benchmarks: synthetic workloads that time one part of the pipeline at scale (`curate bench ...`)."""
