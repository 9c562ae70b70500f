"""Package the repo's validator (gpu-validate) as a Debian .deb with dpkg-deb, so images install it like any package."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from validator import subp
from validator.atomic import write_text

DEPENDS = "python3 (>= 3.9), python3-click, python3-yaml, python3-jinja2"
PACKAGE = "gpuforge-validator"


def _source_files(pkg_dir: Path) -> list:
    return sorted(p for p in pkg_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc",))


def source_hash(repo: Path) -> str:
    """sha256 over the validator package's files (names and bytes): part of the image cache key."""
    h = hashlib.sha256()
    base = repo / "validator"
    for p in _source_files(base):
        h.update(str(p.relative_to(base)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def build_validator_deb(repo: Path, out_dir: Path) -> Path:
    """Build gpuforge-validator_<version>+g<hash>_all.deb into out_dir; returns its path."""
    from validator import __version__

    version = f"{__version__}+g{source_hash(repo)[:10]}"
    out = out_dir / f"{PACKAGE}_{version}_all.deb"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory(prefix="gf-vdeb-", dir=out_dir) as tmp:
        root = Path(tmp) / "root"
        dest = root / "usr/lib/python3/dist-packages/validator"
        for p in _source_files(repo / "validator"):
            target = dest / p.relative_to(repo / "validator")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, target)
        write_text(root / "usr/bin/gpu-validate", "#!/usr/bin/python3\nimport sys\nfrom validator.cli import main\nsys.exit(main())\n", 0o755)
        size_kb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) // 1024 + 1
        control = (
            f"Package: {PACKAGE}\nVersion: {version}\nArchitecture: all\nMaintainer: gpuforge <gpuforge@localhost>\n"
            f"Depends: {DEPENDS}\nRecommends: python3-pynvml\nSection: admin\nPriority: optional\nInstalled-Size: {size_kb}\n"
            "Description: gpuforge node validator (gpu-validate)\n"
            " Detects NVIDIA GPUs, checks CPU/OS tuning and GPU health in 8 groups, writes JSON/HTML reports.\n"
        )
        write_text(root / "DEBIAN/control", control)
        tmp_deb = Path(tmp) / out.name
        subp.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(tmp_deb)], timeout=300)
        tmp_deb.replace(out)
    return out
