"""Driver images as data: tags, labels, cache inputs, the verify step's verdicts, DaemonSets (schema-checked by
kubernetes-validate's bundled Kubernetes schemas), and bad input (no kmod, bad registry)."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from builder.containers import k8s, recipe, spec
from builder.containers.build import find_kmod, resolve
from builder.plan import load_plan
from validator.errors import UserError

ABI = "6.1.0-54-cloud-amd64"
KMOD = spec.Kmod("apt/pool/main/g/x/x.deb", f"gpuforge-nvidia-kmod-proprietary-535.261.03-{ABI}", "535.261.03-1+gpuforge1",
                 "ab" * 32, 1000)


def image(kernel=ABI, flavour="proprietary", suite="bookworm", driver="535.261.03", branch=535):
    return spec.ImageSpec(f"{driver}-{flavour}@{kernel}", driver, branch, flavour, kernel, suite, "nvidia-current", KMOD)


VERIFIED = spec.Verified(ABI, "", ("nvidia-current.ko",), (("libcuda1", "535.261.03-1"),), ("gsp_ga10x.bin",))


def test_tags_follow_nvidias_scheme_with_our_os():
    s = image()
    assert s.tags == (f"535.261.03-{ABI}-debian12", f"535-{ABI}-debian12")
    assert s.refs() == (f"gpuforge/nvidia-driver:535.261.03-{ABI}-debian12", f"gpuforge/nvidia-driver:535-{ABI}-debian12")
    assert s.refs("127.0.0.1:5000/team")[0] == f"127.0.0.1:5000/team/nvidia-driver:535.261.03-{ABI}-debian12"
    assert image(flavour="open").refs()[0].startswith("gpuforge/nvidia-driver-open:")


def test_plus_in_a_kernel_abi_becomes_underscore_in_the_tag():
    s = image(kernel="6.12.117+deb13-cloud-amd64", suite="trixie", driver="550.163.01", branch=550)
    assert s.tags[0] == "550.163.01-6.12.117_deb13-cloud-amd64-debian13"


@pytest.mark.parametrize("ref", ["http://127.0.0.1:5000", "127.0.0.1:5000/Team", "reg:5000/a:tag", "reg@sha256:ab", "", "a b"])
def test_bad_registry_references_are_refused(ref):
    with pytest.raises(UserError, match="registry"):
        spec.parse_registry(ref)


@pytest.mark.parametrize("ref,want", [("127.0.0.1:5000", "127.0.0.1:5000"), ("registry.example.com/gpu/drivers/", "registry.example.com/gpu/drivers")])
def test_good_registry_references(ref, want):
    assert spec.parse_registry(ref) == want


def test_unknown_suite_has_no_os_tag():
    with pytest.raises(UserError, match="OS tag"):
        spec.os_tag("jammy")


def test_labels_carry_what_a_node_needs():
    lab = spec.labels(image(), VERIFIED, "k" * 64, "2026-01-01T00:00:00Z", "gpuforge/driver-runtime:x", "sha256:r")
    assert lab["io.gpuforge.driver"] == "535.261.03" and lab["io.gpuforge.branch"] == "535"
    assert lab["io.gpuforge.kernel"] == ABI and lab["io.gpuforge.flavour"] == "proprietary"
    assert lab["io.gpuforge.kmod.sha256"] == "ab" * 32 and lab["io.gpuforge.signed"] == "no"
    assert lab["io.gpuforge.input-hash"] == "k" * 64
    assert lab["org.opencontainers.image.version"] == "535.261.03"
    assert lab["org.opencontainers.image.base.name"] == "gpuforge/driver-runtime:x"
    signed = spec.Verified(ABI, "gpuforge test", (), (), ())
    assert spec.labels(image(), signed, "k", "t", "b", "i")["io.gpuforge.signed"] == "yes"


def test_image_env_is_sourceable_and_quoted():
    env = spec.image_env(image(), spec.Verified(ABI, "O'Brien CA", (), (), ()))
    assert "GPUFORGE_KERNEL='6.1.0-54-cloud-amd64'\n" in env
    assert "GPUFORGE_SIGNER='O'\\''Brien CA'\n" in env and "GPUFORGE_SIGNED='yes'" in env


def test_cache_inputs_change_with_each_input():
    base = spec.cache_inputs(image(), "sha256:rt", "recipe", "entry")
    assert spec.cache_inputs(image(), "sha256:rt", "recipe", "entry") == base
    for other in (spec.cache_inputs(image(), "sha256:rt2", "recipe", "entry"),
                  spec.cache_inputs(image(), "sha256:rt", "recipe2", "entry"),
                  spec.cache_inputs(image(), "sha256:rt", "recipe", "entry2"),
                  spec.cache_inputs(image(flavour="open"), "sha256:rt", "recipe", "entry")):
        assert other != base


VERIFY_OUT = f"""module nvidia-current.ko {ABI} depends= srcversion=ABC123 signer=
module nvidia-current-uvm.ko {ABI} depends=nvidia srcversion=DEF signer=
module nvidia-current-peermem.ko {ABI} depends=ib_core,nvidia srcversion=X signer=
resolves /lib/modules/{ABI}/updates/gpuforge/nvidia-current.ko
pkg\tlibcuda1\t535.261.03-1\tii \t28906
pkg\tlibnvidia-ml1\t535.261.03-1\tii \t2104
pkg\tnvidia-smi\t535.261.03-1\tii \t880
pkg\tcoreutils\t9.1-1\tii \t18062
firmware gsp_ga10x.bin
firmware gsp_tu10x.bin
command nvidia-smi /usr/bin/nvidia-smi
command nvidia-persistenced /usr/bin/nvidia-persistenced
command modprobe /usr/sbin/modprobe
"""


def test_verify_output_of_a_good_image():
    v, problems = recipe.parse_verify(VERIFY_OUT, ABI, "535.261.03-1")
    assert problems == []
    assert v.modules == ("nvidia-current-peermem.ko", "nvidia-current-uvm.ko", "nvidia-current.ko") and not v.signed
    assert v.srcversion == "ABC123"
    assert dict(v.depends)["nvidia-current-peermem"] == "ib_core,nvidia"
    env = spec.image_env(image(), v)
    assert "GPUFORGE_SRCVERSION='ABC123'" in env
    assert "GPUFORGE_DEPS='nvidia-current: nvidia-current-peermem:ib_core,nvidia nvidia-current-uvm:nvidia'" in env
    assert ("libcuda1", "535.261.03-1") in v.userspace and ("coreutils", "9.1-1") not in v.userspace
    assert v.firmware == ("gsp_ga10x.bin", "gsp_tu10x.bin")


@pytest.mark.parametrize("edit,problem", [
    (lambda t: t.replace(f"uvm.ko {ABI}", "uvm.ko 6.1.0-50-cloud-amd64"), "vermagic 6.1.0-50-cloud-amd64"),
    (lambda t: t.replace("firmware gsp_ga10x.bin\nfirmware gsp_tu10x.bin\n", ""), "GSP firmware"),
    (lambda t: t.replace("nvidia-smi\t535.261.03-1", "nvidia-smi\t535.309.01-1"), "nvidia-smi is 535.309.01-1"),
    (lambda t: t.replace("/usr/bin/nvidia-persistenced", "MISSING"), "nvidia-persistenced is not in the image"),
    (lambda t: t.replace("srcversion=ABC123 signer=", "srcversion=ABC123 signer=Test CA"), "signed inconsistently"),
    (lambda t: t.replace("srcversion=ABC123", "srcversion="), "no srcversion"),
    (lambda t: "\n".join(ln for ln in t.splitlines() if not ln.startswith("module")), "no kernel module"),
])
def test_verify_output_problems_are_named(edit, problem):
    _, problems = recipe.parse_verify(edit(VERIFY_OUT), ABI, "535.261.03-1")
    assert any(problem in p for p in problems), problems


def test_recipe_hash_is_stable_and_covers_the_scripts(monkeypatch):
    h = recipe.recipe_sha256()
    assert h == recipe.recipe_sha256()
    monkeypatch.setattr(recipe, "INSTALL", recipe.INSTALL + "# changed\n")
    assert recipe.recipe_sha256() != h


# ------------------------------------------------------------------------------------------- resolve (bad input)


def test_cells_without_a_kmod_are_bad_input_and_expected_failures_are_skipped(tmp_path):
    _, plan = load_plan()
    with pytest.raises(UserError, match="no built kmod") as e:
        resolve(plan.cells, tmp_path)
    assert "proprietary" in e.value.message and "gpuforge build drivers" in (e.value.hint or "")
    assert "open" not in e.value.message  # the matrix expects the open cell to fail: not asked for


def test_a_published_kmod_is_found_with_its_sha(tmp_path):
    _, plan = load_plan()
    cell = next(c for c in plan.cells if c.flavour == "proprietary")
    from builder import debpkg

    rel = Path("apt/pool/main/g") / debpkg.package_name(cell) / f"{debpkg.package_name(cell)}_{debpkg.package_version(cell)}_amd64.deb"
    (tmp_path / rel).parent.mkdir(parents=True)
    (tmp_path / rel).write_bytes(b"deb")
    found = find_kmod(cell, tmp_path)
    assert found and found.rel == str(rel) and found.size == 3
    specs, skipped = resolve(plan.cells, tmp_path)
    assert [s.cell_id for s in specs] == [cell.id]
    assert [r.status for r in skipped] == ["skipped"] and "expected" in skipped[0].error


# ------------------------------------------------------------------------------------------- DaemonSets


def test_daemonset_per_kernel_validates_against_the_kubernetes_schema(tmp_path):
    s = image()
    text = k8s.render(s, "127.0.0.1:5000/gpuforge/nvidia-driver:" + s.tags[0])
    docs = list(yaml.safe_load_all(text))
    for d in docs:
        kubernetes_validate.validate(d, "1.30.0", strict=True)
    ds = docs[1]
    pod = ds["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"feature.node.kubernetes.io/kernel-version.full": ABI}
    assert pod["hostPID"] is True
    c = pod["containers"][0]
    assert c["securityContext"]["privileged"] is True
    assert c["startupProbe"]["exec"]["command"] == ["test", "-f", "/run/nvidia/validations/.driver-ctr-ready"]
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["/usr/local/bin/gpuforge-driver", "unload"]
    assert {"name": "run-nvidia", "mountPath": "/run/nvidia", "mountPropagation": "Bidirectional"} in c["volumeMounts"]
    assert ds["spec"]["updateStrategy"]["type"] == "OnDelete"


def test_a_broken_daemonset_fails_the_schema():
    d = k8s.daemonset(image(), "img")
    d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(d, "1.30.0", strict=True)
    d = k8s.daemonset(image(), "img")
    d["spec"]["template"]["spec"]["hostPid"] = True  # a misspelt field: strict validation names it
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(d, "1.30.0", strict=True)


def test_names_and_label_values_are_valid_for_odd_kernels():
    s = image(kernel="6.12.117+deb13-cloud-amd64", suite="trixie")
    d = k8s.daemonset(s, "img")
    kubernetes_validate.validate(d, "1.30.0", strict=True)
    assert d["metadata"]["name"] == "gpuforge-driver-6-12-117-deb13-cloud-amd64"
    assert d["spec"]["template"]["spec"]["nodeSelector"][k8s.KERNEL_LABEL] == "6.12.117_deb13-cloud-amd64"


def test_two_images_for_one_kernel_are_refused():
    with pytest.raises(UserError, match="one DaemonSet per kernel"):
        k8s.check_one_per_kernel([image(), image(flavour="open")])
    k8s.check_one_per_kernel([image(), image(kernel="6.1.0-50-cloud-amd64")])


# ------------------------------------------------------------------------------------------- the CLI's bad input


def _cli(*args):
    from click.testing import CliRunner

    from builder.cli import main

    return CliRunner().invoke(main, ["build", "containers", *args])


def test_cli_unknown_cell_is_exit_2():
    r = _cli("--only", "no-such-cell")
    assert r.exit_code == 2 and "no cell matches" in r.output


def test_cli_cell_without_kmod_is_exit_2_naming_it(tmp_path):
    r = _cli("--dist", str(tmp_path), "--only", "proprietary")
    assert r.exit_code == 2 and "no built kmod" in r.output and "535.261.03-proprietary@6.1.0-54-cloud-amd64" in r.output
    assert not (tmp_path / "containers").exists()  # nothing written


def test_cli_push_needs_a_registry_and_a_good_one(tmp_path):
    r = _cli("--dist", str(tmp_path), "--only", "proprietary", "--push")
    assert r.exit_code == 2 and "--push needs --registry" in r.output
    r = _cli("--dist", str(tmp_path), "--only", "proprietary", "--registry", "https://example.com", "--push")
    assert r.exit_code == 2 and "is not a registry reference" in r.output


def test_trial_reads_docker_run_to_modprobe_from_the_guest_files(tmp_path):
    from builder.containers import trial

    (tmp_path / "run-start").write_text("2026-11-30T04:21:03.250000000Z\n")
    (tmp_path / "init.log").write_text(
        "2026-11-30T04:21:05.100000000Z gpuforge-driver: kernel 6.1.0-54-cloud-amd64 matches the image\n"
        "2026-11-30T04:21:07.750123456Z gpuforge-driver: modprobe nvidia\n")
    (tmp_path / "init.rc").write_text("7\n")
    t = trial.Trial(boot=None, out=tmp_path)
    assert t.run_to_modprobe_s() == pytest.approx(4.500123, abs=1e-6)
    assert t.init_rc == 7 and t.state == {}
    (tmp_path / "init.log").write_text("no modprobe line\n")
    assert t.run_to_modprobe_s() is None
