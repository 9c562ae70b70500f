"""The README stays true: its first-try output is what the command prints today, its check and model counts are
the registry's and the catalog's, its layout table names exactly the repository's top-level folders."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
IGNORED = {"build", "dist"}  # .gitignore'd outputs; hidden folders and *.egg-info are skipped too


def test_first_try_output_is_real(monkeypatch):
    from validator.cli import main
    monkeypatch.chdir(REPO)  # the README's paths are relative to the repository
    cmd = re.search(r"```sh\npython3 -m validator (run [^\n]+)\n```\n\n```\n(.*?)\n```", README, re.S)
    assert cmd, "README: no first-try command with its output"
    args, shown = cmd.group(1).split(), cmd.group(2)
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    timing = re.compile(r", [0-9.]+ s\)$", re.M)  # the run's wall time differs from run to run
    assert timing.sub(")", res.output.rstrip("\n")) == timing.sub(")", shown)


def test_check_and_model_counts():
    from validator.catalog import load_catalog
    from validator.runner import load_full_level_modules, specs_for
    load_full_level_modules()
    m = re.search(r"(\d+) quick checks \((\d+) at standard, (\d+) at full\)", README)
    assert m, "README: no check counts"
    assert tuple(int(x) for x in m.groups()) == tuple(len(specs_for(lv)) for lv in ("quick", "standard", "full"))
    models = re.search(r"gpus\.yaml` \((\d+) models", README)
    assert models and int(models.group(1)) == len(load_catalog().models)


def test_layout_table_names_the_real_folders():
    table = README.split("## Layout", 1)[1]
    listed = set(re.findall(r"^\| ([\w.-]+)/ \|", table, re.M))
    present = {p.name for p in REPO.iterdir() if p.is_dir() and not p.name.startswith(".")
               and not p.name.endswith(".egg-info") and p.name not in IGNORED and p.name != "__pycache__"}
    assert listed == present, f"listed but absent: {listed - present}; present but not listed: {present - listed}"
