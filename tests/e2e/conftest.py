"""E2E fixtures shared across test files: NGC stand-in images in the local registry (Debian docker-registry on
127.0.0.1:5000), and the default matrix's kmod build (made once per session, e2e_drivers.py).

The stand-ins are built from our own Debian base (builder.buildenv, no registry pull) and pushed under the exact NGC
repository names and tags, so 127.0.0.1:5000 serves as the farm's mirror of nvcr.io/nvidia/*.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Dict, List

import e2e_drivers
import pytest

MIRROR = "127.0.0.1:5000"
# (image, tag, CUDA_VERSION the stand-in carries, slim): what the e2e tests pull, run, test and bake into an image.
# A slim stand-in holds only printenv and the C library from our Debian base (a few MB: quick to load under TCG).
STANDINS = (
    ("pytorch", "24.01-py3", "12.3.2", False),
    ("pytorch", "25.10-py3", "13.0.2", False),  # the newest pytorch a driver-580 node runs (data/ngc.yaml)
    ("cuda", "12.4.1-base-ubuntu22.04", "12.4.1", True),
)
_SLIM = """FROM {base} AS debian
FROM scratch
COPY --from=debian /usr/bin/printenv /usr/bin/printenv
COPY --from=debian /usr/lib/x86_64-linux-gnu/libc.so.6 /usr/lib/x86_64-linux-gnu/libc.so.6
COPY --from=debian /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 /lib64/ld-linux-x86-64.so.2
ENV PATH=/usr/bin
"""


@dataclass
class Standins:
    mirror: str
    digests: Dict[str, str]  # "pytorch:24.01-py3" -> registry manifest digest
    base: str
    created: List[str]  # local names the fixture built and pushed


def build_standin(client, base: str, repo: str, tag: str, cuda: str, label: str, slim: bool = False) -> str:
    """An image from our Debian base, distinct per tag (label), carrying CUDA_VERSION like NVIDIA's images."""
    head = _SLIM.format(base=base) if slim else f'FROM {base}\nCMD ["/bin/bash"]\n'
    dockerfile = f"{head}LABEL org.gpuforge.ngc-standin={label!r}\nENV CUDA_VERSION={cuda}\n".encode()
    ref = f"{repo}:{tag}"
    client.images.build(fileobj=io.BytesIO(dockerfile), tag=ref, rm=True, pull=False)
    return ref


def push(client, repo: str, tag: str) -> str:
    for event in client.images.push(repo, tag=tag, stream=True, decode=True):
        if isinstance(event, dict) and event.get("error"):
            raise RuntimeError(f"push {repo}:{tag}: {event['error']}")
    return client.images.get_registry_data(f"{repo}:{tag}").id


@pytest.fixture(scope="session")
def ngc_standins():
    from builder.buildenv import BaseImageSpec, docker_client, ensure_base_image
    from validator.ngc.catalog import load_ngc

    client = docker_client()
    base = ensure_base_image(BaseImageSpec(suite="bookworm"), client).tag
    ngc = load_ngc()
    digests, created = {}, []
    for name, tag, cuda, slim in STANDINS:
        repo = f"{MIRROR}/{ngc.image(name).repository}"
        created.append(build_standin(client, base, repo, tag, cuda, f"{name}:{tag}", slim))
        digests[f"{name}:{tag}"] = push(client, repo, tag)
    s = Standins(MIRROR, digests, base, created)
    yield s
    # The nvcr.io names the tests gave the pulled images go (a build host should not look like it has NGC images);
    # the 127.0.0.1:5000/... stand-ins stay: their build cache keeps the digests (and image cache keys) stable.
    for name, tag, *_ in STANDINS:
        try:
            client.images.remove(f"nvcr.io/{ngc.image(name).repository}:{tag}", noprune=True)
        except Exception:  # not pulled in this test run
            pass


@pytest.fixture(scope="session")
def e2e_workdir():
    yield from e2e_drivers.workdir()


@pytest.fixture(scope="session")
def drivers_build(e2e_workdir) -> e2e_drivers.DriversBuild:
    """`gpuforge build drivers` on the default matrix (signed modules, signed repo), built once per session."""
    return e2e_drivers.build(e2e_workdir)
