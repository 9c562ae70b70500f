"""Pushing driver images to any OCI registry through the Docker engine (its TLS settings, the docker config's
credentials). A tag whose digest the registry already has from this image is skipped; an unreachable registry is
an error naming it before anything is pushed."""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple

from builder.containers.spec import parse_registry
from validator.errors import GpuforgeError, UserError

log = logging.getLogger("gpuforge.containers.registry")

# What the engine says when it got an answer from the registry, only not the manifest asked for.
_ANSWERED = ("manifest unknown", "not found", "name unknown", "no such manifest", "404")
_AUTH = ("unauthorized", "authentication required", "denied", "401", "403")


def prefix_of(registry: str) -> str:
    return parse_registry(registry) + "/"


def remote_digest(client, ref: str) -> Optional[str]:
    """The manifest digest the registry holds for ref, None when it has none; UserError when unreachable."""
    import docker

    try:
        return client.api.inspect_distribution(ref)["Descriptor"]["digest"]
    except docker.errors.APIError as e:
        text = str(e.explanation or e).lower()
        if any(s in text for s in _ANSWERED):
            return None
        host = ref.split("/", 1)[0]
        if any(s in text for s in _AUTH):
            raise UserError(f"registry {host} refused access to {ref}: {e.explanation or e}",
                            hint=f"docker login {host} (credentials are read from the docker config)") from None
        raise UserError(f"registry {host} is unreachable: {e.explanation or e}",
                        hint="check the address and that the registry runs; nothing was pushed") from None


def check_reachable(client, registry: str) -> None:
    """Ask for a manifest that need not exist: any answer proves the registry is there and we may talk to it."""
    remote_digest(client, f"{parse_registry(registry)}/gpuforge-reachability-probe:none")


def _local_digests(client, ref: str) -> List[str]:
    repo = ref.rsplit(":", 1)[0]
    img = client.images.get(ref)
    return [d.split("@", 1)[1] for d in img.attrs.get("RepoDigests") or () if d.split("@", 1)[0] == repo]


def push_refs(client, refs: Sequence[str]) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """Push each ref in order (version tag before its alias); (pushed, skipped because already there)."""
    pushed, skipped = [], []
    for ref in refs:
        have = remote_digest(client, ref)
        if have and have in _local_digests(client, ref):
            skipped.append(ref)
            continue
        repo, tag = ref.rsplit(":", 1)
        for event in client.api.push(repo, tag, stream=True, decode=True):
            err = event.get("error") or (event.get("errorDetail") or {}).get("message")
            if err:
                host = ref.split("/", 1)[0]
                raise GpuforgeError(f"push of {ref} to {host} failed: {err} (the tag was not written)")
        got = remote_digest(client, ref)
        if not got or got not in _local_digests(client, ref):
            raise GpuforgeError(f"push of {ref} finished but the registry reports digest {got}")
        pushed.append(ref)
    return tuple(pushed), tuple(skipped)
