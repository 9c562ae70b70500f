"""Load a matrix config, its fleet models (from the GPU catalog) and the drivers' ID lists, and resolve the Plan."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Union

from builder.config import MatrixConfig, find_matrix, load_matrix
from builder.matrix import IdLists, resolve
from validator.errors import ConfigError, UserError

log = logging.getLogger("gpuforge.plan")


def fleet_models(cfg: MatrixConfig, catalog=None) -> tuple:
    """Catalog models for the fleet names; an unknown name is a ConfigError naming fleet[i]."""
    from validator.catalog import load_catalog

    catalog = catalog or load_catalog()
    out = []
    for i, name in enumerate(cfg.fleet):
        try:
            m = catalog.find(name)
        except UserError as e:
            raise ConfigError(cfg.file, f"fleet[{i}]", "a GPU model from the catalog", name, hint=e.message) from None
        if m not in out:
            out.append(m)
    return tuple(out)


def load_idlists(cfg: MatrixConfig) -> IdLists:
    """driver version -> its ID lists (validator/data/idlists, shipped by the catalog side); None where unknown."""
    from validator.idlists import lists_for_driver, load_all

    sets = load_all()
    return {d.version: lists_for_driver(d.version, sets) for d in cfg.drivers}


def load_plan(path: Union[str, Path, None] = None, catalog=None, idlists: Optional[IdLists] = None):
    """(config, plan) for a matrix file (default: builder.config.find_matrix, from the current directory)."""
    cfg = load_matrix(path if path else find_matrix().path)
    plan = resolve(cfg, fleet_models(cfg, catalog), load_idlists(cfg) if idlists is None else idlists)
    return cfg, plan
