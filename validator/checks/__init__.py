"""Node checks in 8 groups. Importing this package registers every built-in check (see base.REGISTRY)."""

from validator.checks import base  # noqa: F401
from validator.checks import cpu, numa, iommu, pcie, ib, gpu, nvlink, memhealth  # noqa: F401
from validator.checks import memory, kernel, container, standard  # noqa: F401
from validator.checks import driver_container  # noqa: F401
