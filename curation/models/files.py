"""Where the models' files live in the package: the project's own open_clip architectures (configs/) and
the weights it ships (assets/<arch>/). Constants only, so every models module can import them."""

from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "configs"  # the project's own architectures (curation-tiny)
ASSETS_DIR = Path(__file__).parent / "assets"  # the weights the package ships, per architecture
BUILTIN = "builtin"
WEIGHTS_FILE = "open_clip_model.safetensors"
