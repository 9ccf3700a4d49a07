"""`curate convert-head`: heads people already use, as heads the pipeline loads (`MlpHead` safetensors).

Their files are PyTorch state dicts (pickles). They are read with `torch.load(weights_only=True)`,
which unpickles tensors and plain containers only and refuses anything else: never a full unpickle,
which would run whatever code a file names.

laion-aesthetic: LAION's aesthetic predictors, over the L2-normalised CLIP image embedding, giving a
score on a 1-10 scale (not a probability: set the head's threshold on that scale, e.g. 5.0):
- improved-aesthetic-predictor (`sac+logos+ava1-l14-linearMSE.pth`, ViT-L/14): an MLP, keys
  layers.0 ... layers.7: Linear(768,1024), Dropout, Linear(1024,128), Dropout, Linear(128,64),
  Dropout, Linear(64,16), Linear(16,1), no activations;
- the LAION-5B aesthetic predictor (`sa_0_4_vit_b_32_linear.pth`, ViT-B/32; `..._vit_l_14_linear.pth`):
  one Linear(dim,1), keys weight and bias.
Dropout is the identity at inference, so the MLP is Linear layers with nothing between them.
"""

from __future__ import annotations

from pathlib import Path

import click

from curation.errors import UserError

FORMATS = ("laion-aesthetic",)


def read_state_dict(path: str | Path) -> dict:
    """A PyTorch state dict, read safely (tensors and plain containers only)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found: give the .pth file of the head to convert")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - not a state dict, or one that holds code
        raise UserError(
            f"{path} cannot be read as a plain PyTorch state dict ({type(exc).__name__}): only tensors are "
            "loaded, never pickled code; export the head's state_dict() and convert that"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} holds no state dict of tensors: export the head's state_dict() and convert that")
    return state


def laion_aesthetic(state: dict):
    """An MlpHead with the weights of a LAION aesthetic predictor (MLP or linear), scoring its 1-10 scale."""
    import torch

    from curation.models.heads import MlpHead

    state = {k.removeprefix("module."): v for k, v in state.items()}
    if set(state) == {"weight", "bias"}:
        linears = [(state["weight"], state["bias"])]
    else:
        indices = sorted({int(k.split(".")[1]) for k in state if k.startswith("layers.") and k.endswith(".weight")})
        expected = {f"layers.{i}.{part}" for i in indices for part in ("weight", "bias")}
        if not indices or set(state) != expected:
            raise UserError(
                "not a LAION aesthetic predictor: expected keys layers.N.weight/bias (the MLP) or weight/bias "
                f"(the linear one), found {sorted(state)[:6]}"
            )
        linears = [(state[f"layers.{i}.weight"], state[f"layers.{i}.bias"]) for i in indices]
    for (w, _), (w_next, _) in zip(linears, linears[1:]):
        if w.shape[0] != w_next.shape[1]:
            raise UserError(f"layer sizes do not chain: {tuple(w.shape)} then {tuple(w_next.shape)}")
    if linears[-1][0].shape[0] != 1:
        raise UserError(f"the last layer gives {linears[-1][0].shape[0]} outputs, not one score")
    hidden = tuple(int(w.shape[0]) for w, _ in linears[:-1])
    head = MlpHead(int(linears[0][0].shape[1]), hidden, ("embedding",), activation="none", output="identity")
    layers = [m for m in head.net if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for layer, (w, b) in zip(layers, linears):
            layer.weight.copy_(w.float())
            layer.bias.copy_(b.float().reshape(-1))
    return head.eval()


def convert_head(kind: str, source: str | Path, output: str | Path) -> dict:
    """Convert `source` (a .pth of `kind`) to an MlpHead safetensors at `output`; returns its settings."""
    if kind not in FORMATS:
        raise UserError(f"--from {kind}: known formats are {', '.join(FORMATS)}")
    head = laion_aesthetic(read_state_dict(source))
    output = Path(output)
    if output.suffix != ".safetensors":
        raise UserError(f"{output}: write the head as a .safetensors file")
    head.save(output, converted_from=f"{kind}:{Path(source).name}", scale="1-10 (LAION aesthetic score)")
    return {"input_dim": int(head.mean.numel()), "hidden": list(head.hidden), "output": head.output}


@click.command("convert-head")
@click.option("--from", "kind", required=True, type=click.Choice(FORMATS), help="The head's format.")
@click.argument("source", metavar="IN.pth", type=click.Path(dir_okay=False))
@click.argument("output", metavar="OUT.safetensors", type=click.Path(dir_okay=False))
def convert_head_command(kind: str, source: str, output: str) -> None:
    """Convert a widely used CLIP head (a PyTorch state dict, read tensors-only) to a pipeline head."""
    info = convert_head(kind, source, output)
    click.echo(
        f"wrote {output}: an MLP over the {info['input_dim']}-d image embedding (hidden {info['hidden']}), "
        f"scores on its own scale; use it with heads: [{{name: aesthetic, weights: {output}, threshold: null}}]"
    )
