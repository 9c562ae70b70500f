"""gpu-validate ngc list|compatible|pull|run|test: NVIDIA NGC containers chosen by the node's driver and GPUs.

Flags of `ngc pull` are a stable interface (the fleet's ngc_images role calls it):
  gpu-validate ngc pull NAME[:TAG] [--mirror HOST] [--registry HOST] [--root DIR] [--driver V] [--gpu MODEL]
                        [--force] [--json]
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Optional, Sequence, Tuple

import click

from validator import __version__
from validator.atomic import check_writable, write_text
from validator.catalog import load_catalog
from validator.errors import GpuforgeError, UserError
from validator.ngc import compat
from validator.ngc.catalog import NgcCatalog, load_ngc, parse_ref
from validator.ngc.facts import read_facts
from validator.ngc.source import ENV_MIRROR, ENV_REGISTRY, Source, key_from_env, source_for

_root = click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("/"),
                     show_default=True, help="Node root: / for this node, or a captured snapshot folder.")
_driver = click.option("--driver", default=None, metavar="VERSION",
                       help="Judge for this driver instead of the loaded one (planning: 535.261.03, 550, ...).")
_gpu = click.option("--gpu", "models", multiple=True, metavar="MODEL",
                    help="Judge for these GPUs (catalog names, repeatable) instead of the ones on the PCI bus.")
_json = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
_mirror = click.option("--mirror", envvar=ENV_MIRROR, default=None, metavar="HOST[/PATH]",
                       help=f"Pull nvcr.io/nvidia/X from HOST/nvidia/X (a farm's mirror; ${ENV_MIRROR}). "
                            "The NGC key is never sent to it.")
_registry = click.option("--registry", envvar=ENV_REGISTRY, default=None, metavar="HOST",
                         help=f"The NGC registry (default nvcr.io; ${ENV_REGISTRY}); $NGC_API_KEY logs in here as $oauthtoken.")
_force = click.option("--force", is_flag=True, help="Go on even when the driver cannot run the release.")


def _release_options(f):
    """Where to pull from and what to judge against: shared by pull, run and test (pull's are a stable interface)."""
    for opt in reversed((_mirror, _registry, _root, _driver, _gpu, _force)):
        f = opt(f)
    return f


def _load() -> Tuple[object, NgcCatalog]:
    cat = load_catalog()
    return cat, load_ngc(catalog=cat)


@click.group("ngc")
def command():
    """NVIDIA NGC containers: list, pick by driver, pull (through a mirror), run, GPU smoke test."""


# ---------------------------------------------------------------------------------------------------- list


@command.command("list")
@click.option("--cuda", default=None, metavar="X.Y", help="Only releases built on this CUDA version.")
@click.option("--image", "images", multiple=True, metavar="NAME", help="Only these images (repeatable).")
@_json
def list_cmd(cuda, images, as_json):
    """Images, tags, CUDA inside, the minimum driver and forward-compatible branches (* = figures not verified)."""
    cat, ngc = _load()
    if cuda is not None:
        cat.cuda_min_driver_for(cuda)
    chosen = [ngc.image(n) for n in images] if images else list(ngc.images)
    want = None if cuda is None else ".".join(cuda.split(".")[:2])
    rows = [(img, r) for img in chosen for r in img.releases if want is None or r.cuda_key == want]
    if as_json:
        click.echo(json.dumps({"registry": ngc.registry, "support_matrix": ngc.support_matrix, "releases": [
            dict(r.to_dict(), repository=img.repository, tag_scheme=img.tag_scheme,
                 native_minimum=compat.native_minimum(r, cat)) for img, r in rows]}, indent=2))
        return
    if not rows:
        click.echo(f"no release in the NGC data uses CUDA {cuda}")
        return
    click.echo(f"{'image':<14} {'tag':<26} {'CUDA':<8} {'needs driver':<13} {'forward compat (data-center)':<32} source")
    for img, r in rows:
        fc = ", ".join(compat.fc_text(e) for e in r.forward_compat) or "-"
        mark = " " if r.verified else "*"
        click.echo(f"{img.name:<14} {r.tag:<26} {r.cuda:<8} {compat.native_minimum(r, cat):<13} {fc:<32}{mark}{r.source}")
    click.echo("* = a figure was not read on the source page (ngc.yaml says where it comes from)")


# ---------------------------------------------------------------------------------------------------- compatible


@command.command("compatible")
@_root
@_driver
@_gpu
@click.option("--image", "images", multiple=True, metavar="NAME", help="Only these images (repeatable).")
@click.option("--cuda", default=None, metavar="X.Y", help="Only releases built on this CUDA version.")
@_json
def compatible_cmd(root, driver, models, images, cuda, as_json):
    """Which releases run on this node natively, which only through forward compatibility, which not; each with
    the rule that decided. Reads the driver and GPUs under --root (or takes --driver/--gpu)."""
    cat, ngc = _load()
    if cuda is not None:
        cat.cuda_min_driver_for(cuda)
    facts = read_facts(root, cat, driver, models)
    chosen = [ngc.image(n) for n in images] if images else list(ngc.images)
    verdicts = compat.judge_all(chosen, facts, cat, cuda)
    newest = {img.name: compat.newest_compatible(img, facts, cat) for img in chosen}
    if as_json:
        click.echo(json.dumps({"node": {"driver": facts.driver, "source": facts.source,
                                        "gpus": [g.__dict__ for g in facts.gpus]},
                               "newest": {k: (v.release.tag if v else None) for k, v in newest.items()},
                               "releases": [v.to_dict() for v in verdicts]}, indent=2))
        return
    click.echo(f"Node: {facts.describe()} (from {facts.source})")
    for img in chosen:
        rows = [v for v in verdicts if v.release.image == img.name]
        if not rows:
            continue
        best = newest[img.name]
        click.echo(f"\n{img.name}: newest that runs here: {best.release.tag + ' (' + best.kind + ')' if best else 'none'}")
        for v in rows:
            mark = " " if v.release.verified else "*"
            click.echo(f"  {v.release.tag:<26}{mark}{v.kind:<15} [{v.rule}] {v.reason}")
    click.echo("\n* = release data not verified on its source page (gpu-validate ngc list)")


# ---------------------------------------------------------------------------------------------------- pull/run/test


def _choose(ngc: NgcCatalog, cat, ref: str, facts: compat.NodeFacts) -> compat.Verdict:
    """The release for NAME:TAG, or for NAME the newest this node runs."""
    name, tag = parse_ref(ref)
    img = ngc.image(name)
    if tag is not None:
        return compat.judge(ngc.release(name, tag), facts, cat)
    if not facts.driver:
        raise UserError(f"no NVIDIA driver loaded ({facts.source}): cannot choose the newest {img.name} release that runs here",
                        hint=f"name a tag ({img.name}:{img.releases[-1].tag}) or plan for a driver with --driver VERSION")
    best = compat.newest_compatible(img, facts, cat)
    if best is None:
        worst = compat.judge(img.releases[0], facts, cat)
        raise UserError(f"no {img.name} release in the NGC data runs on {facts.describe()}: oldest needs {worst.reason}",
                        hint="upgrade the driver, or give a tag and --force")
    return best


def _gate(v: compat.Verdict, force: bool) -> None:
    """Refuse a release the driver cannot run (naming the driver it needs) unless --force."""
    if v.ok:
        if v.kind == compat.FORWARD:
            click.echo(f"note: {v.release.ref} runs here through forward compatibility: {v.reason}", err=True)
        return
    if v.rule == compat.R_NO_DRIVER:
        click.echo(f"note: compatibility not checked: {v.reason}", err=True)
        return
    if force:
        click.echo(f"warning: --force: {v.release.ref} cannot run on this driver: {v.reason}", err=True)
        return
    raise UserError(f"{v.release.ref} cannot run here: {v.reason}",
                    hint=f"it needs driver >= {v.needs}; --force to go on anyway, or `gpu-validate ngc compatible` for what runs")


def _source(ngc: NgcCatalog, v: compat.Verdict, registry: Optional[str], mirror: Optional[str]) -> Source:
    return source_for(ngc.image(v.release.image).repository, v.release.tag, registry, mirror)


def _engine():
    from validator.ngc.engine import Engine

    return Engine.connect(secrets=(key_from_env(),))


def _prepare(ref, root, driver, models, force):
    cat, ngc = _load()
    facts = read_facts(root, cat, driver, models)
    v = _choose(ngc, cat, ref, facts)
    _gate(v, force)
    return cat, ngc, facts, v


@command.command("pull")
@click.argument("ref", metavar="NAME[:TAG]")
@_release_options
@_json
def pull_cmd(ref, mirror, registry, root, driver, models, force, as_json):
    """Pull an NGC image (default tag: the newest release this node runs), through --mirror when set; the image is
    kept under its nvcr.io name. Exit 2 when the driver cannot run it (unless --force)."""
    _, ngc, _, v = _prepare(ref, root, driver, models, force)
    src = _source(ngc, v, registry, mirror)
    pulled = _engine().fetch(src, key_from_env())
    if as_json:
        click.echo(json.dumps(dict(pulled.to_dict(), verdict=v.to_dict()), indent=2))
    else:
        click.echo(f"pulled {pulled.canonical}" + (f" from {pulled.pulled_from}" if src.via_mirror else "") +
                   f"  digest {pulled.digest or '?'}  {pulled.size / 1e6:.0f} MB  [{v.kind}: {v.rule}]")


def _ensure_local(engine, ngc, v, registry, mirror, no_pull: bool) -> str:
    src = _source(ngc, v, registry, mirror)
    if engine.local(src.canonical) is None:
        if no_pull:
            raise UserError(f"{src.canonical} is not present locally", hint=f"gpu-validate ngc pull {v.release.ref}")
        click.echo(f"pulling {src.pull_ref}", err=True)
        engine.fetch(src, key_from_env())
    return src.canonical


_gpus = click.option("--gpus", default="all", show_default=True, help="GPUs for the container: all, none, N, device=0,1.")
_no_pull = click.option("--no-pull", is_flag=True, help="Use only a local image; never pull.")
_ulimit = click.option("--ulimit", "ulimits", multiple=True, metavar="NAME=SOFT[:HARD]",
                       help="Container limit (repeatable); default NGC's memlock=-1 and stack=67108864.")


@command.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("ref", metavar="NAME[:TAG]")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
@_gpus
@click.option("-e", "--env", "envs", multiple=True, metavar="K=V", help="Environment variable (repeatable).")
@click.option("-v", "--volume", "volumes", multiple=True, metavar="SRC:DST[:ro]", help="Bind mount (repeatable).")
@click.option("-w", "--workdir", default=None)
@_ulimit
@_release_options
@_no_pull
def run_cmd(ref, cmd, gpus, envs, volumes, workdir, ulimits, mirror, registry, root, driver, models, force, no_pull):
    """Run CMD in an NGC image with GPUs and NGC's recommended flags (--ipc=host, memlock, stack):
    gpu-validate ngc run pytorch:24.01-py3 -- python -c 'import torch; print(torch.cuda.device_count())'.
    Exit status: the command's."""
    from validator.ngc.engine import parse_ulimits

    limits = parse_ulimits(ulimits)
    env = {}
    for e in envs:
        k, sep, val = e.partition("=")
        if not sep or not k:
            raise UserError(f"--env {e!r}: expected KEY=VALUE")
        env[k] = val
    _, ngc, _, v = _prepare(ref, root, driver, models, force)
    engine = _engine()
    image = _ensure_local(engine, ngc, v, registry, mirror, no_pull)
    rc, _ = engine.run(image, cmd, gpus=gpus, env=env, volumes=volumes, workdir=workdir, ulimits=limits)
    sys.exit(rc)


@command.command("test")
@click.argument("ref", metavar="NAME[:TAG]")
@_gpus
@click.option("--format", "fmt", type=click.Choice(["term", "text", "json", "html", "junit", "prom"]), default="term",
              show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the report here (atomically).")
@click.option("--save", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write the report here, format from the extension (.json .html .xml .prom .txt).")
@_ulimit
@_release_options
@_no_pull
def test_cmd(ref, gpus, fmt, output, save, ulimits, mirror, registry, root, driver, models, force, no_pull):
    """GPU smoke test inside an NGC image: nvidia-smi sees the node's GPUs, the framework computes on one.
    Report as `gpu-validate run` (exit 0 pass, 1 fail, 3 warnings only, 2 usage)."""
    from validator.commands.run import format_for_path
    from validator.ngc import smoke
    from validator.ngc.engine import NoGpuRuntime, parse_ulimits
    from validator.report.model import Report
    from validator.report.render import render, summary_line, want_colour

    save_fmts = [(p, format_for_path(p)) for p in save]
    for p in (*save, *([output] if output else [])):  # an unwritable path is a usage error before any pull
        check_writable(p)
    limits = parse_ulimits(ulimits)
    started, t0 = time.time(), time.perf_counter()
    _, ngc, facts, v = _prepare(ref, root, driver, models, force)
    engine = _engine()
    image = _ensure_local(engine, ngc, v, registry, mirror, no_pull)
    kind = ngc.image(v.release.image).smoke

    def step(argv: Sequence[str]) -> smoke.Step:
        try:
            rc, out = engine.run(image, argv, gpus=gpus, stream=False, ulimits=limits)
            return smoke.Step(rc, out)
        except NoGpuRuntime as e:
            return smoke.Step(125, e.message)
        except GpuforgeError as e:  # e.g. the program is not in the image
            return smoke.Step(127, e.message)

    results = smoke.results_for(v, kind, step(smoke.NVSMI), step(smoke.argv_for(kind)), len(facts.gpus) or None)
    report = Report(host=socket.gethostname(), level="standard", results=results,
                    started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)), duration_s=time.perf_counter() - t0,
                    root=str(root), live=str(root) == "/", driver_version=facts.driver or "", cuda_version=v.release.cuda,
                    tool_version=__version__)
    for path, f in save_fmts:
        write_text(path, render(report, f))
    if output:
        write_text(output, render(report, fmt))
        click.echo(summary_line(report), err=True)
    else:
        click.echo(render(report, fmt, colour=fmt == "term" and want_colour(sys.stdout)), nl=False)
    sys.exit(report.exit_code)
