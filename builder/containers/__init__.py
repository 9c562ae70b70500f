"""Driver containers: per built kmod cell, an OCI image that carries the modules and the NVIDIA user space of the
same version, and loads them on a node through its `gpuforge-driver` entrypoint (drivers/container/).

spec.py      pure: image names, tags, labels, cache inputs
recipe.py    the scripts run inside the build containers (part of every cache key)
build.py     the runbook: resolve -> base -> runtime -> per image install/verify/commit -> push -> k8s
registry.py  push with digest check, registry reachability
k8s.py       one DaemonSet per kernel ABI (pure render)
"""
