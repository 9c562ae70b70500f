"""gpu-validate ngc pull/run/test against stand-in images in a real local registry, through the real Docker engine.

127.0.0.1:5000 plays the farm's mirror of nvcr.io; the node is the H100 capture (driver 580) or a synthetic driver.
There is no GPU here: `ngc test` must report the missing GPU correctly, and `--gpus all` must fail with a clear
message naming the NVIDIA Container Toolkit (unless this engine has the NVIDIA runtime).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path

import pytest
from click.testing import CliRunner

from validator import subp
from validator.bench.launch import free_port

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
H100 = str(REPO / "tests/fixtures/nodes/h100-sxm5-80gb-kvm-guest")
KEY = "nvapi-e2e-DoNotPrint-7f3a9c"


def cli(*args, env=None, timeout=600):
    full = dict(os.environ, NGC_API_KEY=KEY, **(env or {}))
    r = subp.run([sys.executable, "-m", "validator", *args], env=full, timeout=timeout, check=False, cwd=str(REPO))
    assert KEY not in r.stdout + r.stderr, "the NGC key appeared in the output"
    return r


@pytest.fixture
def docker():
    from builder.buildenv import docker_client

    return docker_client()


def _forget(client, ref):
    try:
        client.images.remove(ref)
    except Exception:
        pass


def test_pull_default_tag_through_the_mirror(ngc_standins, docker):
    _forget(docker, "nvcr.io/nvidia/pytorch:25.10-py3")
    r = cli("ngc", "pull", "pytorch", "--root", H100, "--mirror", ngc_standins.mirror, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    # Driver 580 on the H100 capture: the newest pytorch release that runs natively.
    assert out["image"] == "nvcr.io/nvidia/pytorch:25.10-py3"
    assert out["pulled_from"] == f"{ngc_standins.mirror}/nvidia/pytorch:25.10-py3"
    assert out["digest"] == ngc_standins.digests["pytorch:25.10-py3"]
    assert out["verdict"]["verdict"] == "native" and out["verdict"]["rule"] == "ngc.native"
    img = docker.images.get("nvcr.io/nvidia/pytorch:25.10-py3")
    assert img.labels["org.gpuforge.ngc-standin"] == "pytorch:25.10-py3" and out["size"] == img.attrs["Size"]


def test_pull_explicit_tag_with_synthetic_driver_and_forward_compat(ngc_standins, docker):
    _forget(docker, "nvcr.io/nvidia/pytorch:24.01-py3")
    r = cli("ngc", "pull", "pytorch:24.01-py3", "--root", H100, "--driver", "535.261.03", "--mirror", ngc_standins.mirror)
    assert r.returncode == 0, r.stderr
    assert "runs here through forward compatibility" in r.stderr
    assert f"pulled nvcr.io/nvidia/pytorch:24.01-py3 from {ngc_standins.mirror}/nvidia/pytorch:24.01-py3" in r.stdout
    assert ngc_standins.digests["pytorch:24.01-py3"] in r.stdout


def test_pull_refusal_and_force(ngc_standins):
    r = cli("ngc", "pull", "pytorch:25.10-py3", "--root", H100, "--driver", "550.163.01", "--mirror", ngc_standins.mirror)
    assert r.returncode == 2 and "needs driver >= 580.65.06" in r.stderr
    r = cli("ngc", "pull", "pytorch:25.10-py3", "--root", H100, "--driver", "550.163.01", "--mirror",
            ngc_standins.mirror, "--force")
    assert r.returncode == 0 and "--force" in r.stderr, r.stderr


def test_tag_the_mirror_does_not_carry(ngc_standins):
    r = cli("ngc", "pull", "tritonserver:24.01-py3", "--root", H100, "--mirror", ngc_standins.mirror)
    assert r.returncode == 2
    assert f"{ngc_standins.mirror}/nvidia/tritonserver:24.01-py3 is not in registry {ngc_standins.mirror}" in r.stderr
    assert "Traceback" not in r.stderr


def test_registry_unreachable():
    port = free_port()
    r = cli("ngc", "pull", "pytorch:24.01-py3", "--root", H100, "--mirror", f"127.0.0.1:{port}")
    assert r.returncode == 2 and f"registry 127.0.0.1:{port} unreachable" in r.stderr, r.stderr


def _limit() -> list:
    hard = _engine_memlock_hard()
    return [] if hard == -1 else ["--ulimit", f"memlock={hard}"]


def _engine_memlock_hard() -> int:
    """dockerd's own RLIMIT_MEMLOCK hard limit (bytes, -1 = unlimited): a container cannot get more."""
    pid = subp.run(["pgrep", "-xo", "dockerd"], check=False).stdout.strip()
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max locked memory"):
            hard = line.split()[4]
            return -1 if hard == "unlimited" else int(hard)
    return -1


def test_run_streams_output_and_returns_the_exit_status(ngc_standins, docker):
    _forget(docker, "nvcr.io/nvidia/pytorch:24.01-py3")  # run pulls what is missing
    hard = _engine_memlock_hard()
    limit = [] if hard == -1 else ["--ulimit", f"memlock={hard}"]
    r = cli("ngc", "run", "pytorch:24.01-py3", "--root", H100, "--mirror", ngc_standins.mirror, "--gpus", "none",
            *limit, "-e", "GREETING=hello", "--", "sh", "-c", 'echo "$GREETING from $CUDA_VERSION"; ulimit -l; ulimit -s; exit 3')
    assert r.returncode == 3, r.stderr
    assert "hello from 12.3.2" in r.stdout
    assert ("unlimited" if hard == -1 else str(hard // 1024)) in r.stdout and "65536" in r.stdout  # NGC's stack
    assert not docker.containers.list(all=True, filters={"label": "gpuforge.ngc=1", "ancestor": "nvcr.io/nvidia/pytorch:24.01-py3"})


def test_ngc_limits_beyond_the_engine_are_a_clear_error(ngc_standins):
    if _engine_memlock_hard() == -1:
        pytest.skip("this engine may give containers unlimited memlock")
    r = cli("ngc", "run", "pytorch:24.01-py3", "--root", H100, "--mirror", ngc_standins.mirror, "--gpus", "none", "--", "true")
    assert r.returncode == 1 and "may not set the container's limits" in r.stderr and "--ulimit memlock=" in r.stderr


def test_run_with_gpus_on_an_engine_without_the_nvidia_runtime(ngc_standins, docker):
    if "nvidia" in (docker.info().get("Runtimes") or {}):
        pytest.skip("this engine has the NVIDIA runtime; the GPU path is exercised on GPU nodes")
    r = cli("ngc", "run", "cuda:12.4.1-base-ubuntu22.04", "--root", H100, "--mirror", ngc_standins.mirror, *_limit(),
            "--", "printenv")
    assert r.returncode == 1
    assert "cannot give GPUs to containers" in r.stderr and "NVIDIA Container Toolkit" in r.stderr


def test_smoke_test_report(ngc_standins, tmp_path):
    j, h, x = tmp_path / "ngc.json", tmp_path / "ngc.html", tmp_path / "ngc.xml"
    r = cli("ngc", "test", "cuda:12.4.1-base-ubuntu22.04", "--root", H100, "--mirror", ngc_standins.mirror,
            "--gpus", "none", *_limit(), "--format", "text", "--save", str(j), "--save", str(h), "--save", str(x))
    assert r.returncode == 1, r.stdout + r.stderr  # the stand-in has no nvidia-smi and the host no GPU
    rep = json.loads(j.read_text())
    by = {c["id"]: c for c in rep["results"]}
    assert by["container.ngc_compat"]["status"] == "pass"  # driver 580 runs CUDA 12.4.1 natively
    assert by["container.ngc_gpu_visible"]["status"] == "fail"
    assert "nvidia-smi" in by["container.ngc_gpu_visible"]["observed"]
    assert by["container.ngc_framework"]["status"] == "pass"  # CUDA_VERSION=12.4.1 as ngc.yaml says
    assert rep["driver_version"] == "580.159.04" and rep["cuda_version"] == "12.4.1"
    assert "<svg" in h.read_text() and "<testsuite" in x.read_text()
    assert "container.ngc_gpu_visible" in r.stdout


@pytest.fixture
def auth_registry(tmp_path, ngc_standins, docker):
    """A second docker-registry on a free port that wants $oauthtoken / the right key (htpasswd, bcrypt)."""
    import warnings

    with warnings.catch_warnings():  # deprecated since 3.11; libxcrypt's bcrypt ($2b$) is what docker-registry reads
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    port, right = free_port(), "nvapi-right-key-5e1d"
    (tmp_path / "htpasswd").write_text("$oauthtoken:" + crypt.crypt(right, crypt.mksalt(crypt.METHOD_BLOWFISH)) + "\n")
    (tmp_path / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path}/data\n"
        f"http:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: ngc-e2e\n    path: {tmp_path}/htpasswd\n")
    import subprocess
    import time

    proc = subprocess.Popen(["docker-registry", "serve", str(tmp_path / "config.yml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    host = f"127.0.0.1:{port}"
    try:
        for _ in range(50):
            try:
                docker.login(username="$oauthtoken", password=right, registry=host, reauth=True)
                break
            except Exception:
                time.sleep(0.2)
        # The NGC registry stand-in holds one image, pushed with the right key.
        repo = f"{host}/nvidia/pytorch"
        docker.images.get(f"{ngc_standins.mirror}/nvidia/pytorch:24.01-py3").tag(repo, tag="24.01-py3")
        for event in docker.images.push(repo, tag="24.01-py3", stream=True, decode=True,
                                        auth_config={"username": "$oauthtoken", "password": right}):
            assert "error" not in event, event
        yield host, right
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for ref in (f"{host}/nvidia/pytorch:24.01-py3",):
            _forget(docker, ref)


def test_wrong_key_is_a_clear_auth_error_and_never_shown(auth_registry):
    host, _ = auth_registry
    r = cli("--debug", "-v", "ngc", "pull", "pytorch:24.01-py3", "--root", H100, "--registry", host)
    assert r.returncode != 0
    assert f"login to {host} as $oauthtoken failed" in r.stderr and "401" in r.stderr
    assert "not shown" in r.stderr


def test_right_key_logs_in_and_pulls(auth_registry, docker):
    host, right = auth_registry
    _forget(docker, f"{host}/nvidia/pytorch:24.01-py3")
    env = dict(os.environ, NGC_API_KEY=right)
    r = subp.run([sys.executable, "-m", "validator", "-v", "ngc", "pull", "pytorch:24.01-py3", "--root", H100,
                  "--registry", host], env=env, timeout=600, check=False, cwd=str(REPO))
    assert r.returncode == 0, r.stderr
    assert right not in r.stdout + r.stderr
    assert f"pulled {host}/nvidia/pytorch:24.01-py3" in r.stdout


def test_key_absent_from_log_records_and_exceptions(auth_registry, caplog):
    """In process, with every logger at DEBUG (the Docker SDK's too) and --debug re-raising the error."""
    from validator.cli import main

    host, _ = auth_registry
    caplog.set_level(logging.DEBUG)
    res = CliRunner().invoke(main, ["--debug", "ngc", "pull", "pytorch:24.01-py3", "--root", H100, "--registry", host],
                             env={"NGC_API_KEY": KEY})
    assert res.exit_code != 0 and res.exception is not None
    text = "".join(traceback.format_exception(type(res.exception), res.exception, res.exception.__traceback__))
    assert "login to" in text and KEY not in text
    assert KEY not in res.output
    records = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records)
    assert records and KEY not in records
