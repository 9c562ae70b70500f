"""Full-level checks: a short version of every benchmark (imported by the check runner at level full)."""

from __future__ import annotations

from validator.bench import evaluate, suite
from validator.checks.base import Unavailable, check, skip

# Which suite produces each check; the suite runs once per validation (memoised in the Context).
_SUITE_OF = {key: s for s, keys in evaluate.SUITE_KEYS.items() for key in keys}


def _outcomes(ctx, key: str):
    if not getattr(ctx.node, "live", False):
        return skip("benchmarks run only on a live node, not on a snapshot")
    name = _SUITE_OF[key]
    run = ctx._get("bench:" + name, lambda: suite.RUNNERS[name](suite.Options.short()))
    topo = ctx._get("bench:topology", suite.topology)
    try:
        catalog = ctx.catalog
    except Unavailable:
        catalog = None
    return evaluate.outcomes(run, catalog, topo)[key]


def _register(key: str):
    spec = evaluate.CHECKS[key]

    @check(spec.id, spec.group, "full", spec.title, spec.remedy)
    def _fn(ctx):
        return _outcomes(ctx, key)

    _fn.__name__ = spec.id.replace(".", "_")
    return _fn


for _key in evaluate.CHECKS:
    _register(_key)
