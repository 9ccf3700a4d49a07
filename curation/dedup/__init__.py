"""Deduplication in two steps: identify (a table of decisions: key, dup_of, dup_kind), then apply."""
