"""curation: turn raw image-text pairs into a deduplicated, filtered pretraining corpus."""

__version__ = "0.1.0"
