"""Run the registered checks for a level: each check isolated, timed, its failure to read turned into `skip`."""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import hashlib
import importlib
import logging
import time
import traceback
from typing import List, Optional, Sequence

import validator.checks  # noqa: F401  (registers the built-in checks)
from validator.checks import base
from validator.checks.base import LEVELS, CheckResult, CheckSpec, Outcome, ReadingFailed, Unavailable, level_includes
from validator.checks.context import Context
from validator.errors import CommandError, ToolMissing, UserError
from validator.node import NodeReadError, NotCaptured

log = logging.getLogger("gpuforge.runner")


def load_full_level_modules() -> List[str]:
    """Import the modules that hook full-level checks in; a module that is absent adds nothing."""
    problems = []
    for name in base.FULL_LEVEL_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and (name == e.name or name.startswith(e.name + ".")):
                log.info("full level: %s not installed", name)
                continue
            problems.append(f"{name}: {e}")
        except Exception as e:  # a broken plugin must not stop the built-in checks
            problems.append(f"{name}: {type(e).__name__}: {e}")
    return problems


def _all_specs() -> List[CheckSpec]:
    specs = list(base.REGISTRY)
    for provider in list(base.PROVIDERS):
        try:
            specs.extend(provider())
        except Exception as e:
            log.warning("check provider %r failed: %s", provider, e)
    return specs


def _id_matches(check_id: str, pattern: str) -> bool:
    """--check takes an id, a prefix (gpu. or gpu.*) or a glob (*temp*)."""
    return check_id == pattern or check_id.startswith(pattern.rstrip("*")) or fnmatch.fnmatchcase(check_id, pattern)


def specs_for(level: str, groups: Optional[Sequence[str]] = None, ids: Optional[Sequence[str]] = None) -> List[CheckSpec]:
    """The checks a run at `level` executes: built-in ones plus those providers add, in registration order.
    An id or glob in `ids` that selects nothing is a usage error (a typo must not run 0 checks and pass)."""
    seen, out = set(), []
    for s in _all_specs():
        if s.id in seen or not level_includes(level, s.level):
            continue
        if groups and s.group not in groups:
            continue
        if ids and not any(_id_matches(s.id, i) for i in ids):
            continue
        seen.add(s.id)
        out.append(s)
    for i in ids or ():
        if not any(_id_matches(s.id, i) for s in out):
            raise _unknown_check(i, level, groups)
    return out


def _unknown_check(pattern: str, level: str, groups: Optional[Sequence[str]]) -> UserError:
    """Why --check PATTERN selects nothing: another level, another group, or a typo (with the nearest ids)."""
    if level != "full":
        load_full_level_modules()
    specs = _all_specs()
    hits = [s for s in specs if _id_matches(s.id, pattern)]
    if hits and not any(level_includes(level, s.level) for s in hits):
        need = min((s.level for s in hits), key=LEVELS.index)
        return UserError(f"--check {pattern}: {hits[0].id} is a {need}-level check, not run at level {level}",
                         hint=f"add --level {need}")
    if hits:
        return UserError(f"--check {pattern}: {hits[0].id} is in group {hits[0].group}, not in --group "
                         f"{' '.join(groups or ())}", hint=f"add --group {hits[0].group} or drop --group")
    close = difflib.get_close_matches(pattern, sorted({s.id for s in specs}), n=3, cutoff=0.5)
    return UserError(f"--check {pattern}: no check has this id or matches this glob",
                     hint=(f"did you mean: {', '.join(close)}? " if close else "")
                     + "list them with `gpu-validate run --list-checks --level full`")


@contextlib.contextmanager
def _closing(progress):
    try:
        yield
    finally:
        progress.close()


def _status(o: Outcome) -> str:
    return o.status if o.status in ("pass", "warn", "fail", "skip") else "fail"


def _outcomes(spec: CheckSpec, ctx: Context) -> List[Outcome]:
    try:
        res = spec.func(ctx)
    except ReadingFailed as e:
        return [Outcome("fail", str(e), "a working driver reading", "the driver does not answer for GPUs that are on "
                        "the bus: check `nvidia-smi`, dmesg for XIDs; reload the driver or reset the GPUs")]
    except Unavailable as e:
        return [Outcome("skip", str(e))]
    except NotCaptured as e:
        return [Outcome("skip", str(e))]
    except ToolMissing as e:
        return [Outcome("skip", f"tool missing: {e.argv[0]}")]
    except NodeReadError as e:
        return [Outcome("skip", f"{e.path}: {e.reason}")]
    except CommandError as e:
        return [Outcome("skip", e.message.splitlines()[0])]
    except Exception as e:  # a bug in one check: report it loudly, keep running the others
        log.debug("check %s crashed:\n%s", spec.id, traceback.format_exc())
        return [Outcome("fail", f"check crashed: {type(e).__name__}: {e}"[:300], "",
                        "validator bug: rerun with --debug and report it")]
    if isinstance(res, Outcome):
        return [res]
    res = list(res or [])
    bad = [r for r in res if not isinstance(r, Outcome)]
    if bad or not res:
        return [Outcome("fail", f"check returned {bad[0]!r}" if bad else "check returned nothing", "",
                        "validator bug: report it")]
    return res


def run_checks(ctx: Context, level: str = "quick", groups: Optional[Sequence[str]] = None,
               ids: Optional[Sequence[str]] = None, progress=None) -> List[CheckResult]:
    """Every check for the level, in order; one failing or crashing check never stops the rest.
    `progress` (validator.progress.NoProgress-like) hears of each check and of each group once its last check ran."""
    if level not in LEVELS:
        raise ValueError(f"level {level!r} not in {LEVELS}")
    from validator import events
    from validator.progress import NoProgress
    progress = progress or NoProgress()
    problems = load_full_level_modules() if level == "full" else []
    results: List[CheckResult] = []
    specs = specs_for(level, groups, ids)
    last_of = {s.group: i for i, s in enumerate(specs)}
    group_s: dict = {}
    progress.start(level, specs)
    quiet = type(progress) is NoProgress  # nobody shows benchmark events: the children record none
    with contextlib.nullcontext() if quiet else events.listening(progress.event), _closing(progress):
        for i, spec in enumerate(specs):
            progress.check_started(spec)
            t0 = time.perf_counter()
            outs = _outcomes(spec, ctx)
            took = time.perf_counter() - t0
            group_s[spec.group] = group_s.get(spec.group, 0.0) + took
            ms = took * 1000.0 / max(1, len(outs))
            mine = [CheckResult(spec.id, spec.group, spec.level, _status(o), spec.title, o.observed, o.expected,
                                o.remedy or (spec.remedy if _status(o) in ("warn", "fail") else ""), o.subject,
                                o.metric, round(ms, 3)) for o in outs]
            results.extend(mine)
            progress.check_done(spec, mine)
            if last_of[spec.group] == i:
                progress.group_done(spec.group, [r for r in results if r.group == spec.group], group_s[spec.group])
    if level == "full" and not groups and not ids:
        full = [s for s in specs if s.level == "full"]
        for p in problems:
            results.append(CheckResult("gpu.bench_suite", "gpu", "full", "fail", "Benchmark suite hook", p, "loads",
                                       "fix the benchmark module (validator.bench)"))
        if not full and not problems:
            results.append(CheckResult("gpu.bench_suite", "gpu", "full", "skip", "Benchmark suite hook",
                                       "no full-level checks registered (validator.bench not installed)"))
    return results


# ---- one whole run --------------------------------------------------------------------------------

def _hostname(node) -> str:
    import socket
    if node.live:
        return socket.gethostname()
    for rel in ("/etc/hostname", "/proc/sys/kernel/hostname"):
        t = node.read_text(rel, "").strip()
        if t:
            return t
    return node.root.resolve().name or str(node.root)


def _check_expected_models(exp, catalog=None) -> None:
    """--expect names must be GPUs the catalog knows: a typo is a usage error (exit 2), not a failed node."""
    from validator.errors import GpuforgeError, UserError
    try:
        if catalog is None:
            from validator.catalog import load_catalog
            catalog = load_catalog()
    except (ImportError, GpuforgeError):
        return  # no catalog: gpu.model falls back to matching the driver's product name
    for _, name in exp.items:
        try:
            catalog.find(name)
        except UserError as e:
            raise UserError(f"--expect {exp}: {e.message}", hint=e.hint) from None


def validate(root="/", level: str = "quick", profile=None, expect: Optional[str] = None, groups=None, ids=None,
             use_nvml: Optional[bool] = None, cuda_timeout: float = 120.0, docker_image: Optional[str] = None,
             node=None, catalog=None, progress=None):
    """Read the node at `root` (live when `/`), run the level's checks, return a Report."""
    import datetime
    from validator import __version__
    from validator.checks.context import Expectation
    from validator.node import Node
    from validator.report.model import Report
    from validator.tuning import TuningProfile, resolve_profile

    t0 = time.perf_counter()
    started = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    node = node or Node.open(root)
    prof = profile if isinstance(profile, TuningProfile) else resolve_profile(node.root, profile)
    exp_text = expect or prof.gpu.expect
    exp = Expectation.parse(exp_text) if exp_text else None
    if exp is not None:
        _check_expected_models(exp, catalog)
    ctx = Context(node, prof, exp, level, catalog=catalog, use_nvml=use_nvml, cuda_timeout=cuda_timeout,
                  docker_image=docker_image)
    results = run_checks(ctx, level, groups, ids, progress)
    driver = cuda = ""
    gpus = ()
    try:
        data = ctx.gpu_data
        driver, cuda = data.driver_version or "", data.cuda_version or ""
        gpus = tuple(_gpu_facts(ctx, g) for g in data.gpus)
    except Unavailable:
        pass
    return Report(host=_hostname(node), level=level, results=tuple(results), started=started,
                  duration_s=time.perf_counter() - t0, root=str(node.root), live=node.live, profile=prof.name,
                  profile_sha256=hashlib.sha256(prof.to_json().encode()).hexdigest(),
                  expect=str(exp) if exp else "", driver_version=driver, cuda_version=cuda, gpus=gpus,
                  tool_version=__version__, bios_checklist=prof.bios_checklist, data=_measurements(ctx))


# GpuInfo fields a report keeps per GPU (the per-GPU table of the HTML report).
_GPU_FIELDS = ("index", "bus_id", "name", "uuid", "memory_total_mib", "temp_c", "temp_headroom_c", "power_draw_w",
               "power_limit_w", "sm_clock_mhz", "sm_clock_max_mhz", "ecc_enabled", "dbe_volatile", "dbe_aggregate",
               "sbe_volatile", "remap_pending", "pcie_gen", "pcie_gen_max", "pcie_width", "pcie_width_max",
               "persistence", "fabric_state")


def _gpu_facts(ctx: Context, g) -> dict:
    d = {k: getattr(g, k) for k in _GPU_FIELDS}
    model = ctx.model_of(g)
    d["model"] = model.name if model else None
    status = ctx.fact("nvlink_status")  # read by gpu.nvlink_links when it ran
    if status is not None and g.index in status:
        d["nvlink_active"] = len(status[g.index].active)
    return d


def _measurements(ctx: Context) -> dict:
    """What the full level measured (benchmark runs, topology) for the report's pictures; {} below full."""
    runs = [v for k, v in ctx.facts("bench:").items() if k != "bench:topology"]
    if not runs:
        return {}
    from validator.bench.report_out import bench_data
    return {"bench": bench_data(runs, ctx.fact("bench:topology"))}
