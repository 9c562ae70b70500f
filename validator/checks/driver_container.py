"""container.driver_container: when a driver container serves this node, it is ready and the loaded nvidia module
is the version its image carries (the entrypoint's state file holds the image's labels)."""

from __future__ import annotations

import json

from validator.checks.base import check, fail, ok, skip
from validator.checks.context import Context
from validator.driver_container import READY, STATE

REMEDY = "docker logs gpuforge-driver; gpu-validate drivers install --method container --image REF"


@check("container.driver_container", "container", "quick", "Driver container ready, its driver loaded")
def driver_container(ctx: Context):
    text = ctx.node.read_text(STATE, default=None)
    if text is None:
        return skip("no driver container on this node (no /run/nvidia/gpuforge-driver.json)")
    try:
        state = json.loads(text)
        want, name = str(state["driver"]), str(state.get("image") or "the driver container")
    except (ValueError, KeyError, TypeError):
        return fail("/run/nvidia/gpuforge-driver.json is not the entrypoint's state file", "its JSON state", REMEDY)
    expected = f"{name} ready, nvidia {want} loaded"
    ready = ctx.node.exists(READY)
    loaded = (ctx.node.read_text("sys/module/nvidia/version", default="") or "").strip()
    if state.get("state") != "ready" or not ready:
        why = f"state {state.get('state', '?')}: {state.get('message', '')}".strip()
        return fail(f"{why}; ready file {'present' if ready else 'absent'}", expected, REMEDY)
    if loaded != want:
        return fail(f"ready file present but the loaded nvidia module is {loaded or 'none'}", expected,
                    "another driver was loaded over the container's: restart the driver container")
    return ok(f"{name}: ready, nvidia {loaded} loaded", expected)
