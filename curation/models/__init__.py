"""Models: open_clip loading (by name, tag or local file) and the project's own small configs."""
