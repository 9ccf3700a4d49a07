"""Storage: listing input shards, reading records, committing output files. Knows nothing of stages."""
