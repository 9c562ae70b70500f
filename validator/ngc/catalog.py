"""The NGC image registry (validator/data/ngc.yaml): images, tag schemes, per release CUDA + driver needs, sources.

Loaded through validator.schema's Reader: a bad field is `ngc.yaml: images[0].releases[3].cuda: expected ...`.
CUDA versions are checked against cuda.yaml (the one CUDA -> driver table); nothing here repeats it.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

from validator.catalog import DATA_DIR, Catalog, load_catalog
from validator.errors import UserError
from validator.schema import Reader, load_yaml
from validator.selection import vkey

NGC_FILE = "ngc.yaml"
# What `ngc test` runs inside an image besides nvidia-smi (validator/ngc/smoke.py holds the commands).
SMOKES = ("torch", "tensorflow", "tritonserver", "tensorrt", "cuda", "rapids", "deepstream")
_CUDA = re.compile(r"^\d+\.\d+(\.\d+)?$")
_DRIVER = re.compile(r"^\d{3}(\.\d+){0,2}$")  # "545" (a branch) or "545.23" / "550.54.14"
_CC = re.compile(r"^\d+\.\d+$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$")
_PREFIXES = ("nvcr.io/nvidia/", "nvidia/")


@dataclass(frozen=True)
class Release:
    """One tag of one image and what a node needs to run it (see the header of data/ngc.yaml)."""

    image: str
    tag: str
    cuda: str
    min_driver: Optional[str]  # as the release note states; None = cuda.yaml's minimum for `cuda`
    forward_compat: Tuple[str, ...]  # "470.57" (R470 from 470.57) or "470" (any R470)
    min_compute_capability: Optional[str]
    source: str
    verified: bool
    note: str = ""
    based_on: Optional[str] = None

    @property
    def cuda_key(self) -> str:
        return ".".join(self.cuda.split(".")[:2])

    @property
    def ref(self) -> str:
        return f"{self.image}:{self.tag}"

    def to_dict(self) -> dict:
        return {"image": self.image, "tag": self.tag, "cuda": self.cuda, "min_driver": self.min_driver,
                "forward_compat": list(self.forward_compat), "min_compute_capability": self.min_compute_capability,
                "based_on": self.based_on, "source": self.source, "verified": self.verified, "note": self.note or None}


@dataclass(frozen=True)
class Image:
    name: str  # "pytorch", "rapidsai/base"
    repository: str  # under the registry: "nvidia/pytorch"
    description: str
    tag_scheme: str
    tag_pattern: str
    smoke: str
    releases: Tuple[Release, ...]  # oldest first
    release_key: Optional[str] = None  # regex: group 1 = the release a tag belongs to

    def key_of(self, tag: str) -> str:
        if self.release_key:
            m = re.match(self.release_key, tag)
            if m:
                return m.group(1)
        return tag

    def find(self, tag: str) -> Optional[Release]:
        """The row for a tag: the exact tag, else a row of the same release (cuda:12.4.1-devel-... -> 12.4.1)."""
        for r in self.releases:
            if r.tag == tag:
                return r
        if self.release_key and re.match(self.tag_pattern, tag):
            key = self.key_of(tag)
            for r in self.releases:
                if self.key_of(r.tag) == key:
                    return replace(r, tag=tag)
        return None

    def to_dict(self) -> dict:
        return {"name": self.name, "repository": self.repository, "description": self.description,
                "tag_scheme": self.tag_scheme, "smoke": self.smoke, "releases": [r.to_dict() for r in self.releases]}


@dataclass(frozen=True)
class NgcCatalog:
    registry: str
    support_matrix: str
    images: Tuple[Image, ...]
    file: str = ""

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(i.name for i in self.images)

    def image(self, name: str) -> Image:
        """An image by name ('pytorch', 'nvidia/pytorch', 'nvcr.io/nvidia/pytorch'); UserError with the nearest names."""
        q = _strip_prefix(name.strip().lower())
        for i in self.images:
            if i.name == q:
                return i
        close = difflib.get_close_matches(q, list(self.names), n=3, cutoff=0.5)
        hint = ("did you mean: " + ", ".join(close)) if close else ("known images: " + ", ".join(self.names))
        raise UserError(f"unknown NGC image {name!r}", hint=hint)

    def release(self, name: str, tag: str) -> Release:
        img = self.image(name)
        r = img.find(tag)
        if r is not None:
            return r
        tags = [x.tag for x in img.releases]
        close = difflib.get_close_matches(tag, tags, n=3, cutoff=0.5)
        scheme = f"tags of {img.name} look like {img.tag_scheme}"
        hint = ("did you mean: " + ", ".join(f"{img.name}:{t}" for t in close) + f" ({scheme})") if close else \
            f"{scheme}; known: {', '.join(tags[-6:])} (gpu-validate ngc list --image {img.name})"
        raise UserError(f"unknown tag {tag!r} of NGC image {img.name}", hint=hint)


def parse_ref(text: str) -> Tuple[str, Optional[str]]:
    """'pytorch:24.01-py3' -> ('pytorch', '24.01-py3'); 'nvcr.io/nvidia/pytorch' -> ('pytorch', None)."""
    t = text.strip()
    if not t or "@" in t or any(c.isspace() for c in t):
        raise UserError(f"{text!r} is not an image reference", hint="give NAME or NAME:TAG, e.g. pytorch:24.01-py3")
    name, sep, tag = t.rpartition(":") if ":" in t.rsplit("/", 1)[-1] else (t, "", "")
    name = _strip_prefix(name.lower())
    if not _NAME.match(name) or (sep and not tag):
        raise UserError(f"{text!r} is not an image reference", hint="give NAME or NAME:TAG, e.g. pytorch:24.01-py3")
    return name, (tag or None)


def _strip_prefix(name: str) -> str:
    for p in _PREFIXES:
        if name.startswith(p):
            return name[len(p):]
    return name


# ---------------------------------------------------------------------------------------------------- loading


def _read_release(r: Reader, image: str, pattern: str, cuda_table) -> Release:
    r.mapping({"tag", "cuda", "min_driver", "forward_compat", "min_compute_capability", "based_on", "source",
               "verified", "note"})
    tag = r.key("tag").str()
    if not re.match(pattern, tag):
        raise r.key("tag").fail(f"a tag matching {pattern}", tag)
    based_on = r.key("based_on", default=None).optional()
    cuda = _matching(r, "cuda", _CUDA, 'a CUDA version such as "12.3.2"')
    if cuda is None and based_on is None:
        raise r.key("cuda").fail('a CUDA version such as "12.3.2" (or based_on)')
    if cuda is not None and ".".join(cuda.split(".")[:2]) not in cuda_table:
        raise r.key("cuda").fail("a CUDA version whose major.minor is in cuda.yaml (" + ", ".join(sorted(cuda_table, key=vkey)) + ")", cuda)
    min_driver = _matching(r, "min_driver", _DRIVER, 'a driver branch or version such as "545" or "550.54.14"')
    fc = []
    for fr in r.key("forward_compat", default=[]).list():
        v = fr.str()
        if not _DRIVER.match(v):
            raise fr.fail('a driver branch or version such as "470.57" or "535"', v)
        fc.append(v)
    if len({v.split(".")[0] for v in fc}) != len(fc):
        raise r.key("forward_compat").fail("one entry per driver branch", fc)
    cc = _matching(r, "min_compute_capability", _CC, 'a compute capability such as "7.5"')
    source = r.key("source").str()
    if not source.startswith("https://"):
        raise r.key("source").fail("the https:// address the figures were read from", source)
    verified = r.key("verified").bool()
    note = r.key("note", default="").str(nonempty=False)
    if not verified and not note.strip():
        raise r.fail("a note saying which figure was not read and where it comes from (verified is false)",
                     key=f"{r.path}.note")
    return Release(image, tag, cuda or "", min_driver, tuple(fc), cc, source, verified, note,
                   None if based_on is None else based_on.str())


def _matching(r: Reader, key: str, pattern: re.Pattern, expected: str) -> Optional[str]:
    """An optional string field that must match pattern; None when absent or null."""
    kr = r.key(key, default=None).optional()
    if kr is None:
        return None
    v = kr.str()
    if not pattern.match(v):
        raise kr.fail(expected, v)
    return v


def _read_image(r: Reader, cuda_table) -> Image:
    r.mapping({"name", "repository", "description", "tag_scheme", "tag_pattern", "smoke", "release_key", "releases"})
    name = r.key("name").str()
    if not _NAME.match(name):
        raise r.key("name").fail("a lowercase image name such as pytorch or rapidsai/base", name)
    pattern = r.key("tag_pattern").str()
    key = r.key("release_key", default=None).optional()
    for rx in [r.key("tag_pattern")] + ([key] if key is not None else []):
        try:
            re.compile(rx.value)
        except re.error as e:
            raise rx.fail(f"a regular expression ({e})", rx.value) from None
    releases = []
    seen: Dict[str, str] = {}
    for rr in r.key("releases").list(nonempty=True):
        rel = _read_release(rr, name, pattern, cuda_table)
        if rel.tag in seen:
            raise rr.key("tag").fail(f"a tag not already listed ({seen[rel.tag]})", rel.tag)
        seen[rel.tag] = rr.path
        if releases and _order(releases[-1].tag) > _order(rel.tag):
            raise rr.key("tag").fail(f"releases listed oldest first (after {releases[-1].tag})", rel.tag)
        releases.append(rel)
    return Image(name=name, repository=r.key("repository").str(), description=r.key("description").str(),
                 tag_scheme=r.key("tag_scheme").str(), tag_pattern=pattern, smoke=r.key("smoke").str(choices=SMOKES),
                 releases=tuple(releases), release_key=None if key is None else key.str())


def _order(tag: str) -> Tuple[int, ...]:
    """The leading version numbers of a tag (24.01-py3 -> (24, 1); 12.4.1-base -> (12, 4, 1))."""
    m = re.match(r"^[0-9.]+", tag)
    return vkey(m.group(0)) if m else ()


def _resolve_based_on(images: Tuple[Image, ...], root: Reader) -> Tuple[Image, ...]:
    """Fill cuda/min_driver/forward_compat/min_cc of `based_on` rows from the row they name."""
    by_ref = {r.ref: r for i in images for r in i.releases}
    out = []
    for ii, img in enumerate(images):
        rels = []
        for ri, rel in enumerate(img.releases):
            if rel.based_on:
                key = f"images[{ii}].releases[{ri}].based_on"
                base = by_ref.get(rel.based_on)
                if base is None or base.based_on:
                    raise root.fail("an image:tag listed in this file (itself not based_on another)", rel.based_on, key=key)
                rel = replace(rel, cuda=rel.cuda or base.cuda, min_driver=rel.min_driver or base.min_driver,
                              forward_compat=rel.forward_compat or base.forward_compat,
                              min_compute_capability=rel.min_compute_capability or base.min_compute_capability,
                              verified=rel.verified and base.verified)
            rels.append(rel)
        out.append(replace(img, releases=tuple(rels)))
    return tuple(out)


@functools.lru_cache(maxsize=4)
def _load(path: Path, catalog: Catalog) -> NgcCatalog:
    root = Reader(str(path), load_yaml(path)).mapping({"schema_version", "registry", "support_matrix", "images"})
    root.key("schema_version").int(lo=1, hi=1)
    images = []
    names: Dict[str, str] = {}
    for ir in root.key("images").list(nonempty=True):
        img = _read_image(ir, catalog.cuda_min_driver)
        if img.name in names:
            raise ir.key("name").fail(f"a name not already used ({names[img.name]})", img.name)
        names[img.name] = ir.path
        images.append(img)
    return NgcCatalog(registry=root.key("registry").str(), support_matrix=root.key("support_matrix").str(),
                      images=_resolve_based_on(tuple(images), root), file=str(path))


def load_ngc(path: Union[str, Path, None] = None, catalog: Optional[Catalog] = None) -> NgcCatalog:
    """Load (cached) the NGC registry: a YAML path, or None for the packaged validator/data/ngc.yaml."""
    p = Path(path) if path is not None else DATA_DIR / NGC_FILE
    return _load(p.resolve(), catalog or load_catalog())
