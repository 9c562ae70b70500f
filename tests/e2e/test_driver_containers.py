"""Driver containers end to end, for real: `gpuforge build containers` on the session's kmod build (signed modules),
push to the local registry (Debian docker-registry on 127.0.0.1:5000), pull back by tag, labels and the kmod inside
byte for byte against dist/apt; then a golden image with Docker booted under qemu (TCG) loads the image from an
attached disk and runs `init`: the kernel check passes, modprobe is attempted, and with no NVIDIA GPU the container
ends in a clear "no NVIDIA GPU" state with nothing left loaded or mounted. On this host (another kernel) init
refuses and names the tag to pull."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import kubernetes_validate
import pytest
import requests
import yaml
from e2e_drivers import ABI, PROP, ROOT, gpuforge

from builder.containers import trial
from builder.images.build import Context, build_image
from builder.images.definition import find_image
from validator import subp

pytestmark = pytest.mark.e2e
REGISTRY = "127.0.0.1:5000"
TAG = f"535.261.03-{ABI}-debian12"
ALIAS = f"535-{ABI}-debian12"
BOOT_TIMEOUT = float(os.environ.get("GPUFORGE_BOOT_TIMEOUT", "900"))
NODE_IMAGE = ROOT / "tests" / "fixtures" / "images" / "docker-node.yaml"


@dataclass
class Built:
    report: dict
    result: dict
    dist: Path
    k8s: Path
    namespace: str
    elapsed: float

    @property
    def remote(self) -> str:
        return f"{REGISTRY}/{self.namespace}/nvidia-driver:{TAG}"


@pytest.fixture(scope="module")
def client():
    return docker.from_env(timeout=900)


@pytest.fixture(scope="module")
def built(drivers_build, tmp_path_factory, client):
    """One image build + push for the module; its registry repository is removed afterwards."""
    ns = f"gpuforge-e2e-{os.getpid()}"
    k8s = tmp_path_factory.mktemp("k8s")
    t0 = time.monotonic()
    res = gpuforge("build", "containers", "--dist", str(drivers_build.dist), "--registry", f"{REGISTRY}/{ns}", "--push",
                   "--k8s", str(k8s), "--json", timeout=3600)
    elapsed = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    report = json.loads(res.stdout)
    result = next(r for r in report["results"] if r["cell_id"] == PROP)
    yield Built(report, result, drivers_build.dist, k8s, ns, elapsed)
    _delete_repository(f"{ns}/nvidia-driver")
    for ref in result["refs"]:
        if ref.startswith(f"{REGISTRY}/{ns}/"):
            try:
                client.images.remove(ref)
            except docker.errors.APIError:
                pass


def _delete_repository(name: str) -> None:
    """Best effort: the registry allows deletes (scripts/registry.yml); blobs go at its next garbage collection."""
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    for tag in (TAG, ALIAS):
        r = requests.head(f"http://{REGISTRY}/v2/{name}/manifests/{tag}", headers=accept, timeout=10)
        digest = r.headers.get("Docker-Content-Digest")
        if digest:
            requests.delete(f"http://{REGISTRY}/v2/{name}/manifests/{digest}", timeout=10)


def _kmod_deb(b: Built) -> Path:
    return b.dist / next(r for r in json.loads((b.dist / "apt" / "manifest.json").read_text())["kmods"].items()
                         if r[0] == PROP)[1]["deb"]


def test_image_built_from_our_base_with_labels_and_tags(built, client):
    r = built.result
    print(f"\ncold image build: {built.elapsed:.0f}s; size {r['size'] / 1e6:.0f} MB, compressed {r['compressed'] / 1e6:.0f} MB, "
          f"own layer {r['layer'] / 1e6:.0f} MB, payload {r['payload_kib'] / 1024:.0f} MiB; steps {r['steps']}")
    assert r["status"] == "built" and r["signed"] is True
    img = client.images.get(f"gpuforge/nvidia-driver:{TAG}")
    assert f"gpuforge/nvidia-driver:{ALIAS}" in img.tags
    lab = img.labels
    deb = _kmod_deb(built)
    assert lab["io.gpuforge.kernel"] == ABI and lab["io.gpuforge.driver"] == "535.261.03"
    assert lab["io.gpuforge.branch"] == "535" and lab["io.gpuforge.flavour"] == "proprietary"
    assert lab["io.gpuforge.kmod.sha256"] == hashlib.sha256(deb.read_bytes()).hexdigest()
    assert lab["io.gpuforge.signed"] == "yes" and "gpuforge test module signing" in lab["io.gpuforge.signer"]
    assert "libcuda1=535.261.03-1" in lab["io.gpuforge.userspace"] and "nvidia-smi=535.261.03-1" in lab["io.gpuforge.userspace"]
    assert len(lab["io.gpuforge.input-hash"]) == 64 and lab["org.opencontainers.image.version"] == "535.261.03"
    # FROM our own base: the first layer is the runtime image made from the mmdebstrap base (no registry pull).
    assert lab["org.opencontainers.image.base.name"].startswith("gpuforge/driver-runtime:bookworm-")
    base = client.images.get(lab["org.opencontainers.image.base.name"])
    assert base.attrs["RootFS"]["Layers"] == img.attrs["RootFS"]["Layers"][:1]
    assert img.attrs["Config"]["Entrypoint"] == ["/usr/local/bin/gpuforge-driver"] and img.attrs["Config"]["Cmd"] == ["init"]


def test_pushed_then_pulled_back_by_tag_with_the_kmod_byte_for_byte(built, client, tmp_path):
    built_id = built.result["image_id"]
    # Forget the image entirely, then pull it from the registry by tag: a real download.
    client.images.remove(built_id, force=True)
    pulled = client.images.pull(built.remote)
    assert pulled.id == built_id, "the registry returned another image"
    assert pulled.labels["io.gpuforge.kernel"] == ABI
    assert client.images.get_registry_data(built.remote).id.startswith("sha256:")
    # Every file of the .deb's data (modules, modprobe config, docs excluded) is in the pulled image, byte for byte.
    deb_files = _deb_files(_kmod_deb(built), tmp_path / "deb")
    kos = {p: d for p, d in deb_files.items() if p.endswith(".ko")}
    assert len(kos) >= 4, sorted(deb_files)
    c = client.containers.create(built.remote, ["true"])
    try:
        for path, data in kos.items():
            stream, _ = c.get_archive("/" + path)
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                got = tar.extractfile(tar.getmembers()[0]).read()
            assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest(), path
    finally:
        c.remove(force=True)
    for tag in (f"gpuforge/nvidia-driver:{TAG}", f"gpuforge/nvidia-driver:{ALIAS}"):
        pulled.tag(*tag.split(":"))  # back as the build left it (the cache trusts the local tags)


def _deb_files(deb: Path, tmp: Path) -> dict:
    subp.run(["dpkg-deb", "-x", str(deb), str(tmp)], timeout=120)
    return {str(p.relative_to(tmp)): p.read_bytes() for p in tmp.rglob("*") if p.is_file() and not p.is_symlink()}


def test_second_run_is_cached_and_push_skips_what_the_registry_has(built):
    t0 = time.monotonic()
    res = gpuforge("build", "containers", "--dist", str(built.dist), "--registry", f"{REGISTRY}/{built.namespace}",
                   "--push", "--json", timeout=900)
    elapsed = time.monotonic() - t0
    assert res.returncode == 0, res.stderr[-3000:]
    r = next(x for x in json.loads(res.stdout)["results"] if x["cell_id"] == PROP)
    print(f"\ncached build + push check: {elapsed:.1f}s")
    assert r["status"] == "cached" and r["pushed"] == [] and len(r["push_skipped"]) == 2
    assert elapsed < 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_registry_is_exit_2_naming_it(built, client):
    port = _free_port()
    res = gpuforge("build", "containers", "--dist", str(built.dist), "--registry", f"127.0.0.1:{port}/x", "--push",
                   timeout=600)
    assert res.returncode == 2, res.stderr
    assert f"registry 127.0.0.1:{port} is unreachable" in res.stderr and "nothing was pushed" in res.stderr
    assert not [t for i in client.images.list() for t in i.tags if t.startswith(f"127.0.0.1:{port}/")]


def test_daemonset_for_the_kernel_is_valid(built):
    files = sorted(built.k8s.glob("*.yaml"))
    assert [f.name for f in files] == ["gpuforge-driver-6-1-0-54-cloud-amd64.yaml"]
    docs = list(yaml.safe_load_all(files[0].read_text()))
    for d in docs:
        kubernetes_validate.validate(d, "1.30.0", strict=True)
    pod = docs[1]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == built.remote
    assert pod["nodeSelector"]["feature.node.kubernetes.io/kernel-version.full"] == ABI


def test_init_on_a_host_with_another_kernel_refuses_and_names_the_tag(built, client):
    here = os.uname().release
    if here == ABI:
        pytest.skip("this host runs the image's kernel")
    c = client.containers.run(built.remote, ["init"], detach=True, network_mode="none",
                              environment={"GPUFORGE_IMAGE": built.remote})
    try:
        rc = c.wait(timeout=120)["StatusCode"]
        out = c.logs().decode()
    finally:
        c.remove(force=True)
    want = f"{REGISTRY}/{built.namespace}/nvidia-driver:535.261.03-{here.replace('+', '_')}-debian12"
    assert rc == 4, out
    assert f"but the node runs {here}: pull {want}" in out


# ------------------------------------------------------------------------------------------- a booted node


@pytest.fixture(scope="module")
def node_image():
    dist = Path(os.environ.get("GPUFORGE_E2E_DIST", ROOT / ".cache" / "e2e-dist"))
    ctx = Context(repo=ROOT, dist=dist, apt_dir=None)
    t0 = time.monotonic()
    m = build_image(find_image(ROOT / "images", str(NODE_IMAGE)), ctx)
    print(f"\nnode image with docker: {'cached' if m.get('cached') else 'built'} in {time.monotonic() - t0:.0f}s")
    return dist / "images" / "docker-node" / "docker-node.qcow2"


def test_booted_node_loads_the_image_and_init_ends_in_no_gpu(built, node_image, client, tmp_path):
    t = trial.run(client, f"gpuforge/nvidia-driver:{TAG}", built.remote, node_image, tmp_path, BOOT_TIMEOUT)
    log = t.text("guest.log")
    assert not t.boot.timed_out, f"no poweroff within {BOOT_TIMEOUT}s; guest log:\n{log[-3000:]}\nserial:\n{t.boot.serial[-3000:]}"
    assert t.init_rc is not None, f"guest log:\n{log[-4000:]}"
    init = t.text("init.log")
    # The kernel-ABI check passes and the module's vermagic is the guest's kernel.
    assert t.text("uname").strip() == ABI
    assert t.text("vermagic").split()[0] == ABI
    assert f"kernel {ABI} matches the image; module vermagic {ABI}" in init
    # modprobe attempted, and with no NVIDIA GPU a clear state, a non-zero exit, nothing left behind.
    assert "gpuforge-driver: modprobe nvidia" in init, init
    assert t.init_rc == 7, init
    assert "no NVIDIA GPU" in init
    assert t.state["state"] == "no-gpu" and t.state["driver_root_mounted"] is False
    assert ".driver-ctr-ready" not in t.text("run-nvidia.txt")
    assert not [ln for ln in t.text("modules.txt").splitlines() if ln.startswith("nvidia")]
    assert "/run/nvidia/driver" not in t.text("mountinfo.txt")
    assert t.text("fwpath").strip() == ""
    # The node-side install method passes the entrypoint's reason on and leaves no container to restart in a loop.
    assert t.text("install.rc").strip() not in ("", "0")
    assert "no-gpu" in t.text("install.err") and "no NVIDIA GPU" in t.text("install.err")
    assert "gpuforge-driver" not in t.text("containers.txt")
    print(f"\nnode: docker run -> modprobe nvidia {t.run_to_modprobe_s():.1f}s; boot to poweroff {t.boot.seconds:.0f}s")
