"""Ray cluster addresses checked before ray.init, which waits many minutes for a cluster that does not
answer: one line in seconds instead, before anything is written."""

from __future__ import annotations

from curation.errors import UserError
from curation.io.urls import answers, strip_credentials

RAY_PROBE_TIMEOUT_S = 5.0
_DEFAULT_PORTS = {"ray": 10001, "": 6379}  # Ray client server; GCS


def check_ray_address(address: str) -> None:
    """A cluster address that cannot work fails in seconds with one line: credentials in it (Ray takes none
    from an address), a ray:// address without Ray's client installed, or a host and port that do not
    answer a TCP connect (ray.init itself waits many minutes for an unreachable cluster)."""
    from urllib.parse import urlsplit

    if address in ("auto", "local"):
        return
    shown = strip_credentials(address)
    scheme = address.split("://")[0] if "://" in address else ""
    if "@" in address.split("://")[-1].split("/")[0]:
        raise UserError(
            f"run.address {shown} carries a user name or password, which Ray does not take from an address: "
            "drop it (a cluster with token authentication reads RAY_AUTH_TOKEN)"
        )
    if scheme not in _DEFAULT_PORTS:
        return  # another scheme (a plug-in's): Ray says what it thinks of it
    if scheme == "ray":
        import importlib.util

        if importlib.util.find_spec("grpc") is None:
            raise UserError(f"run.address {shown} needs Ray's client: pip install 'ray[client]'")
    try:
        split = urlsplit(address if scheme else f"//{address}")
        host, port = split.hostname, split.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        host = port = None
    if not host:
        raise UserError(f"run.address {shown} is not host:port or ray://host:port: fix run.address / RAY_ADDRESS")
    if not answers(host, port, RAY_PROBE_TIMEOUT_S):
        raise UserError(
            f"cannot reach Ray cluster at {shown}: nothing answers at {host}:{port} within {RAY_PROBE_TIMEOUT_S:g} s; "
            "check run.address / RAY_ADDRESS and that the cluster is up"
        )
