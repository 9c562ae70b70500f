"""The Docker edge of the NGC verbs: log in, pull (and name the image canonically), run, save, read digests.

Docker SDK only (no `docker` command lines). Every message that leaves this module passes through redact():
the NGC key never reaches stdout, a log record or an exception text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from validator.atomic import write_chunks
from validator.errors import GpuforgeError, UserError
from validator.ngc.source import NGC_USER, Secret, Source, redact

log = logging.getLogger("gpuforge.ngc")
PULL_TIMEOUT = 3600  # seconds a single Docker API call may take (framework images are 10-20 GB)
# What the engine says when it has no NVIDIA runtime for --gpus (docker run's own wording).
_NO_GPU_RUNTIME = ("could not select device driver", "nvidia-container-cli", "unknown or invalid runtime name: nvidia")
_UNREACHABLE = ("connection refused", "no such host", "i/o timeout", "dial tcp", "network is unreachable",
                "server misbehaving", "tls: ", "connection reset")
_AUTH = ("unauthorized", "authentication required", "401", "denied", "incorrect username or password")
_NOT_FOUND = ("manifest unknown", "not found", "404", "name unknown")


class NoGpuRuntime(GpuforgeError):
    """The Docker engine cannot hand GPUs to a container (no NVIDIA Container Toolkit)."""


@dataclass(frozen=True)
class Pulled:
    canonical: str  # nvcr.io/nvidia/pytorch:24.01-py3
    pulled_from: str
    image_id: str  # sha256:... (config digest)
    digest: Optional[str]  # sha256:... (manifest digest in the registry it came from)
    size: int  # bytes, uncompressed as the engine reports

    def to_dict(self) -> dict:
        return {"image": self.canonical, "pulled_from": self.pulled_from, "id": self.image_id,
                "digest": self.digest, "size": self.size}


# NGC's recommended `docker run` limits for its framework images (--ulimit memlock=-1 --ulimit stack=67108864).
NGC_ULIMITS = {"memlock": (-1, -1), "stack": (67108864, 67108864)}


def parse_ulimits(specs: Sequence[str]) -> Dict[str, Tuple[int, int]]:
    """NGC's limits, overridden per name by --ulimit NAME=SOFT[:HARD] (docker run's form; -1 = unlimited)."""
    out = dict(NGC_ULIMITS)
    for spec in specs:
        name, sep, val = spec.partition("=")
        soft, _, hard = val.partition(":")
        try:
            out[name.strip()] = (int(soft), int(hard or soft))
        except ValueError:
            raise UserError(f"--ulimit {spec!r}: expected NAME=SOFT[:HARD], e.g. memlock=-1 or nofile=1024:4096") from None
        if not sep or not name.strip():
            raise UserError(f"--ulimit {spec!r}: expected NAME=SOFT[:HARD]")
    return out


def gpu_request(gpus: str):
    """--gpus all | none | N | device=0,2 (docker run's vocabulary) -> DeviceRequest list."""
    from docker.types import DeviceRequest

    g = gpus.strip().lower()
    if g == "none":
        return []
    if g == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if g.isdigit() and int(g) > 0:
        return [DeviceRequest(count=int(g), capabilities=[["gpu"]])]
    if g.startswith("device="):
        ids = [x.strip() for x in g[len("device="):].split(",") if x.strip()]
        if ids:
            return [DeviceRequest(device_ids=ids, capabilities=[["gpu"]])]
    raise UserError(f"--gpus {gpus!r}: expected all, none, a count or device=0,1")


class Engine:
    """A Docker engine reached through the SDK; `secrets` are masked in everything it reports."""

    def __init__(self, client, secrets: Sequence[Optional[Secret]] = ()):
        self.client = client
        self.secrets = tuple(s for s in secrets if s)

    @classmethod
    def connect(cls, secrets: Sequence[Optional[Secret]] = ()) -> "Engine":
        try:
            import docker
        except ImportError:
            raise UserError("the docker Python package is not installed",
                            hint="apt install python3-docker (or pip install docker)") from None
        try:
            client = docker.from_env(timeout=PULL_TIMEOUT)
            client.ping()
        except Exception as e:  # the SDK raises several types for "no engine"
            raise UserError(f"cannot reach the Docker engine: {e}", hint="start dockerd (systemctl start docker)") from None
        return cls(client, secrets)

    def _clean(self, e: object) -> str:
        text = getattr(e, "explanation", None) or str(e)
        return redact(str(text), self.secrets)

    # ---- registry -------------------------------------------------------------------------------
    def login(self, registry: str, key: Secret) -> None:
        """docker login REGISTRY as $oauthtoken with the NGC key; a refusal says so without the key."""
        try:
            self.client.login(username=NGC_USER, password=key.reveal(), registry=registry, reauth=True)
        except Exception as e:
            msg = self._clean(e)
            if any(m in msg.lower() for m in _UNREACHABLE):
                raise UserError(f"registry {registry} unreachable: {msg}", hint="check the address and the network") from None
            raise UserError(f"login to {registry} as {NGC_USER} failed: {msg}",
                            hint="check $NGC_API_KEY (an NGC API key; its value is not shown)") from None
        log.info("logged in to %s as %s", registry, NGC_USER)

    def _auth(self, key: Optional[Secret]) -> Optional[Dict[str, str]]:
        return {"username": NGC_USER, "password": key.reveal()} if key else None

    def _registry_error(self, src: Source, e: object) -> UserError:
        msg = self._clean(e)
        low = msg.lower()
        if any(m in low for m in _UNREACHABLE):
            return UserError(f"registry {src.pull_host} unreachable while pulling {src.pull_ref}: {msg}",
                             hint="check --mirror / $GPUFORGE_NGC_MIRROR and the network")
        if any(m in low for m in _AUTH):
            return UserError(f"registry {src.pull_host} refused {src.pull_ref}: {msg}",
                             hint="set $NGC_API_KEY (NGC API key; never shown) or check the mirror's access rules")
        if any(m in low for m in _NOT_FOUND):
            return UserError(f"{src.pull_ref} is not in registry {src.pull_host}: {msg}",
                             hint="the mirror may not carry this tag yet")
        return UserError(f"pulling {src.pull_ref} failed: {msg}")

    def pull(self, src: Source, key: Optional[Secret] = None) -> Pulled:
        """Pull src.pull_ref, tag it with its canonical NGC name, report id, registry digest and size."""
        try:
            for event in self.client.api.pull(src.pull_repo, tag=src.tag, stream=True, decode=True,
                                              auth_config=self._auth(key)):
                if isinstance(event, dict) and event.get("error"):
                    raise _StreamError(event.get("error"))
                if isinstance(event, dict) and event.get("status", "").startswith(("Digest", "Status")):
                    log.info("%s: %s", src.pull_ref, redact(event["status"], self.secrets))
            image = self.client.images.get(src.pull_ref)
        except Exception as e:
            raise self._registry_error(src, e) from None
        if src.pull_ref != src.canonical:
            image.tag(src.canonical_repo, tag=src.tag)
        return Pulled(src.canonical, src.pull_ref, image.id, _repo_digest(image, src.pull_repo), int(image.attrs.get("Size") or 0))

    def fetch(self, src: Source, key: Optional[Secret] = None) -> Pulled:
        """Pull with the NGC key when src is the NGC registry itself (login as $oauthtoken first); a mirror never
        sees the key."""
        if key and not src.via_mirror:
            self.login(src.pull_host, key)
            return self.pull(src, key)
        if key:
            log.info("NGC key not sent to mirror %s", src.pull_host)
        return self.pull(src)

    def registry_digest(self, src: Source, key: Optional[Secret] = None) -> str:
        """The manifest digest the registry serves for src (no pull): what a build's cache key is made of."""
        try:
            data = self.client.images.get_registry_data(src.pull_ref, auth_config=self._auth(key))
        except Exception as e:
            raise self._registry_error(src, e) from None
        return data.id

    def local(self, ref: str):
        """The local image named ref, or None."""
        import docker

        try:
            return self.client.images.get(ref)
        except docker.errors.ImageNotFound:
            return None

    # ---- containers ---------------------------------------------------------------------------
    def run(self, ref: str, argv: Sequence[str], gpus: str = "all", env: Optional[Dict[str, str]] = None,
            volumes: Sequence[str] = (), workdir: Optional[str] = None, stream: bool = True,
            ulimits: Optional[Dict[str, Tuple[int, int]]] = None) -> Tuple[int, str]:
        """Run argv in ref with NGC's recommended flags (--ipc=host, unlimited memlock, 64 MiB stack unless
        `ulimits` says otherwise); stream its output; remove the container. Returns (exit status, output)."""
        import docker

        limits = NGC_ULIMITS if ulimits is None else ulimits
        container = None
        try:
            # create, then start: a container that fails to start is still ours to remove
            container = self.client.containers.create(
                ref, command=list(argv), device_requests=gpu_request(gpus), environment=env or {},
                volumes=list(volumes), working_dir=workdir, ipc_mode="host",
                ulimits=[docker.types.Ulimit(name=n, soft=a, hard=b) for n, (a, b) in limits.items()],
                labels={"gpuforge.ngc": "1"})
            container.start()
            chunks: List[str] = []
            for chunk in container.logs(stream=True, follow=True):
                text = chunk.decode(errors="replace")
                chunks.append(text)
                if stream:
                    print(text, end="", flush=True)
            status = container.wait()
            return int(status.get("StatusCode", 1)), "".join(chunks)
        except docker.errors.APIError as e:
            msg = self._clean(e)
            if any(m in msg for m in _NO_GPU_RUNTIME):
                raise NoGpuRuntime(f"the Docker engine cannot give GPUs to containers: {msg}",
                                   hint="install the NVIDIA Container Toolkit and run `nvidia-ctk runtime configure "
                                        "--runtime=docker` (or pass --gpus none)") from None
            if "setting rlimit" in msg:
                raise GpuforgeError(f"the Docker engine may not set the container's limits {limits}: {msg}",
                                    hint="raise dockerd's LimitMEMLOCK/LimitSTACK (NGC wants memlock unlimited) or pass "
                                         "--ulimit memlock=<bytes> within the engine's limit") from None
            raise GpuforgeError(f"running {ref} failed: {msg}") from None
        finally:
            if container is not None:
                try:
                    container.remove(force=True)
                except Exception:  # already gone
                    pass

    # ---- files --------------------------------------------------------------------------------
    def save(self, ref: str, path: Path) -> Path:
        """`docker save` of one image (with its name) to a tarball, written atomically."""
        return write_chunks(path, self.client.images.get(ref).save(named=ref))


class _StreamError(Exception):
    """An error event inside the pull stream (the API call itself succeeded)."""


def _repo_digest(image, repo: str) -> Optional[str]:
    for rd in image.attrs.get("RepoDigests") or []:
        name, _, digest = rd.partition("@")
        if name == repo:
            return digest
    return None
