"""Cache keys, deb control generation, step-output parsing and the summary table (pure)."""

from __future__ import annotations

import dataclasses
import io

from builder import debpkg, kmod
from builder.config import load_matrix, repo_root
from builder.drivers import Progress, fmt_seconds, summary_table
from builder.matrix import Cell

CFG = load_matrix(repo_root() / "matrix.yaml")
KERNEL = CFG.kernels[0]
DRIVER = CFG.drivers[0]
PROP = Cell(KERNEL, DRIVER, "proprietary", ("H100 SXM5 80GB",))
OPEN = Cell(KERNEL, DRIVER, "open", ("A100 SXM4 80GB",))
BS = kmod.BuildSettings("http://deb.debian.org/debian", "http://deb.debian.org/debian-security")


def test_cache_key_is_stable_and_names_what_changed():
    m1 = kmod.cache_manifest(PROP, "sha256:aaa", BS)
    assert kmod.cache_key(m1) == kmod.cache_key(kmod.cache_manifest(PROP, "sha256:aaa", BS))
    assert m1["source"] == "nvidia-kernel-source=535.261.03-1"
    assert m1["headers"] == "linux-headers-6.1.0-54-cloud-amd64=6.1.190-1"
    m2 = kmod.cache_manifest(PROP, "sha256:bbb", BS)
    assert kmod.cache_key(m1) != kmod.cache_key(m2)
    assert kmod.changed_inputs(m1, m2) == ("base_image: 'sha256:aaa' -> 'sha256:bbb'",)
    k2 = dataclasses.replace(KERNEL, version="6.1.190-2")
    m3 = kmod.cache_manifest(dataclasses.replace(PROP, kernel=k2), "sha256:aaa", BS)
    assert [c.split(":")[0] for c in kmod.changed_inputs(m1, m3)] == ["headers", "image"]
    assert kmod.cache_key(kmod.cache_manifest(PROP, "sha256:aaa", BS, "certsha")) != kmod.cache_key(m1)
    assert kmod.cache_key(kmod.cache_manifest(OPEN, "sha256:aaa", BS)) != kmod.cache_key(m1)
    assert kmod.changed_inputs(None, m1) == ("no previous build",)


def test_make_jobs_is_not_an_input():
    fast = dataclasses.replace(BS, make_jobs=16)
    assert kmod.cache_key(kmod.cache_manifest(PROP, "x", BS)) == kmod.cache_key(kmod.cache_manifest(PROP, "x", fast))


def test_control_fields():
    ctl = debpkg.control(PROP, 40000, "k" * 64, "sha256:img")
    text = ctl.text()
    assert ctl.get("Version") == "535.261.03-1+gpuforge1"
    dep = ctl.get("Depends")
    assert dep.startswith("linux-image-6.1.0-54-cloud-amd64 | linux-image-6.1.0-54-cloud-amd64-unsigned, kmod")
    assert "nvidia-smi (= 535.261.03-1)" in dep and "libcuda1 (= 535.261.03-1)" in dep
    assert "nvidia-kernel-support (= 535.261.03-1)" in dep and "nvidia-open-kernel-support" not in dep
    assert "nvidia-open-kernel-support (= 535.261.03-1)" in debpkg.control(OPEN, 1).get("Depends")
    assert ctl.get("Gpuforge-Module") == "nvidia-current"
    assert "nvidia-kernel-dkms" in ctl.get("Conflicts") and "nvidia-open-kernel-dkms" in ctl.get("Conflicts")
    slot = debpkg.slot_name("6.1.0-54-cloud-amd64")
    assert slot in ctl.get("Conflicts") and ctl.get("Replaces") == slot and slot in ctl.get("Provides")
    assert "nvidia-kernel-535.261.03" in ctl.get("Provides")
    assert ctl.get("Gpuforge-Kernel") == "6.1.0-54-cloud-amd64" and ctl.get("Gpuforge-Flavour") == "proprietary"
    assert ctl.get("Section") == "non-free/kernel"
    assert debpkg.control(OPEN, 1).get("Section") == "contrib/kernel"
    # RFC822 shape: continuation lines start with a space, no empty line inside the paragraph.
    lines = text.rstrip("\n").split("\n")
    assert all(ln and (ln[0] == " " or ": " in ln) for ln in lines)
    assert text.endswith("\n") and "\n\n" not in text


def test_package_name_carries_driver_flavour_and_abi():
    name = debpkg.package_name(PROP)
    assert "535.261.03" in name and "6.1.0-54-cloud-amd64" in name
    assert debpkg.package_name(OPEN) != name


def test_maintainer_scripts_run_depmod_for_that_abi():
    s = debpkg.maintainer_scripts("6.1.0-54-cloud-amd64")
    assert "depmod -a 6.1.0-54-cloud-amd64" in s["postinst"] and s["postinst"].startswith("#!/bin/sh")
    assert "remove|purge" in s["postrm"]


def test_first_error_line():
    log = ("  CC [M]  nvidia/nv.o\n"
           "/gf/build/modules/nvidia-kernel/nvidia/nv-pci.c:200:13: error: too few arguments to function 'pci_resize_resource'\n"
           "make[2]: *** Error 1\n")
    assert "pci_resize_resource" in kmod.first_error_line(log)
    apt = "Reading package lists...\nE: Version '535.999-1' for 'nvidia-kernel-source' was not found\n"
    assert kmod.first_error_line(apt).startswith("E: Version '535.999-1'")
    unmet = " linux-headers-x : Depends: linux-kbuild-6.1 (>= 6.1.190-1) but 6.1.176-1 is to be installed\nE: Unable to correct problems\n"
    assert "linux-kbuild-6.1" in kmod.first_error_line(unmet)
    assert kmod.first_error_line("") == "(no output)"


def test_check_verify_output():
    abi = "6.1.0-54-cloud-amd64"
    ok = f"vermagic nvidia.ko {abi} SMP preempt mod_unload modversions \nsigner nvidia.ko \n"
    assert kmod.check_verify_output(abi, ok) == []
    bad = ok + "vermagic nvidia-drm.ko 6.1.0-53-cloud-amd64 SMP\ndepmod: WARNING: /gf/kroot/lib/modules/x/updates/gpuforge/nvidia-drm.ko needs unknown symbol drm_foo\n"
    problems = kmod.check_verify_output(abi, bad)
    assert problems[0] == f"nvidia-drm.ko: vermagic 6.1.0-53-cloud-amd64 != {abi}"
    assert "drm_foo" in problems[1]
    assert kmod.check_verify_output(abi, "") == ["no kernel module was produced"]


def test_cell_sources_add_foreign_suites_with_low_pin():
    lines, pins = kmod.cell_sources(PROP, BS)
    assert lines == [] and pins == []  # bookworm-security is in the base image
    trixie_driver = dataclasses.replace(DRIVER, suite="trixie")
    lines, pins = kmod.cell_sources(dataclasses.replace(PROP, driver=trixie_driver), BS)
    assert lines == ["deb http://deb.debian.org/debian trixie main contrib non-free non-free-firmware"]
    assert "Pin: release n=trixie" in pins and "Pin-Priority: 100" in pins
    script = kmod.render_headers(PROP, BS) + kmod.render("source", PROP, BS)
    assert "linux-headers-6.1.0-54-cloud-amd64=6.1.190-1" in script and "nvidia-kernel-source=535.261.03-1" in script
    assert "KERNEL_UNAME=6.1.0-54-cloud-amd64" in kmod.render("compile", PROP, BS)
    assert "SYSSRC" not in kmod.render("compile", PROP, BS)
    assert '"$dest/nvidia-current${b#nvidia}"' in kmod.render("strip", PROP, BS)
    assert '"$dest/nvidia-current-open${b#nvidia}"' in kmod.render("strip", OPEN, BS)


def test_summary_table():
    rs = [kmod.CellResult("535.261.03-proprietary@6.1.0-54-cloud-amd64", "built", 125.4, deb="apt/pool/x.deb"),
          kmod.CellResult("535.261.03-open@6.1.0-54-cloud-amd64", "failed", 61.0, step="compile",
                          error="nv-pci.c:200:13: error: too few arguments to function 'pci_resize_resource'"),
          kmod.CellResult("tesla@6.1", "cached", 0.0, deb="apt/pool/y.deb")]
    out = summary_table(rs).splitlines()
    assert out[0].split() == ["CELL", "RESULT", "TIME", "DETAIL"]
    assert out[1].split()[1:3] == ["built", "2m05s"]
    assert "FAILED" in out[2] and "compile: nv-pci.c:200:13: error: too few arguments" in out[2]
    assert out[-1] == "1 built, 1 cached, 1 failed"
    rs[1].expected = "known"
    out = summary_table(rs).splitlines()
    assert out[2].split()[1] == "xfail" and out[2].endswith("[expected: known]")
    assert out[-1] == "1 built, 1 cached, 0 failed, 1 failed as expected"
    from builder.drivers import BuildReport
    assert BuildReport(rs).failed == []
    assert fmt_seconds(59.6) == "1m00s" and fmt_seconds(3) == "3s"


def test_progress_plain_lines():
    buf = io.StringIO()
    p = Progress(2, stream=buf, tty=False)
    p.step("a", "compile")
    p.finish(kmod.CellResult("a", "failed", 3.0, step="compile", error="boom"))
    p.close()
    assert buf.getvalue().splitlines() == ["gpuforge: [1/2] a: compile", "gpuforge: [1/2] a: failed in 3s (compile: boom)"]


def test_archive_mismatch_names_the_definition_and_key():
    out = "Reading package lists...\nE: Version '535.999.01-1' for 'nvidia-kernel-source' was not found\n"
    msg = kmod.archive_mismatch(PROP, out)
    assert msg.endswith("drivers/535.261.03.yaml: flavours.proprietary.source.version: "
                        "nvidia-kernel-source=535.999.01-1 is not in the archive (bookworm)")
    out = "E: Unable to locate package linux-headers-6.1.0-54-cloud-amd64\n"
    assert "kernels/6.1.0-54-cloud-amd64.yaml: abi: linux-headers-6.1.0-54-cloud-amd64 is not in the archive" in \
        kmod.archive_mismatch(PROP, out)
    assert kmod.archive_mismatch(PROP, "E: Failed to fetch http://deb.debian.org/... 503") == ""
