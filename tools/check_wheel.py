"""Checks what a built wheel (and its sdist) carry before they go to PyPI / the napari hub.

The wheel must hold the package, its bundled sample files and the npe2 manifest, the metadata
with both entry points, and nothing else: no tests, benchmarks, docs, sample-data scripts,
virtual environments or byte code. Every module of the source tree must be in it (a missing
``__init__.py`` silently drops a subpackage from ``find:``). The sdist must be able to rebuild
the wheel (README, setup.cfg, pyproject.toml, the package and its data) and carry the tests.

    python tools/check_wheel.py dist/napari_medseg-*.whl [dist/napari_medseg-*.tar.gz]

Exits 1 with one line per problem.
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "napari_medseg"
FORBIDDEN_PARTS = {"tests", "benchmarks", "docs", "sample_data", "tools", ".venv", "__pycache__"}
REQUIRED_ENTRY_POINTS = (
    "[console_scripts]",
    "napari-medseg = napari_medseg.cli:main",
    "[napari.manifest]",
    "napari-medseg = napari_medseg:napari.yaml",
)


def expected_package_files() -> set[str]:
    """Modules, the manifest and the sample files of the source tree, as wheel paths."""
    pkg = ROOT / PACKAGE
    files = {p for p in pkg.rglob("*.py") if "__pycache__" not in p.parts}
    files |= {pkg / "napari.yaml"}
    files |= {p for p in (pkg / "_sample_files").iterdir() if p.is_file()}
    return {p.relative_to(ROOT).as_posix() for p in files}


def check_wheel(path: Path) -> list[str]:
    problems = []
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        dist_info = [n for n in names if n.split("/")[0].endswith(".dist-info")]
        entry_points = next((n for n in dist_info if n.endswith("/entry_points.txt")), None)
        ep_text = zf.read(entry_points).decode() if entry_points else ""
        metadata = next((n for n in dist_info if n.endswith("/METADATA")), None)
        meta_text = zf.read(metadata).decode() if metadata else ""
    package = {n for n in names if n.split("/")[0] == PACKAGE}
    for n in sorted(set(names) - package - set(dist_info)):
        problems.append(f"unexpected file outside the package: {n}")
    for n in sorted(names):
        parts = set(n.split("/")[:-1])
        if parts & FORBIDDEN_PARTS or n.endswith((".pyc", ".pyo")):
            problems.append(f"file that must not ship: {n}")
    for n in sorted(expected_package_files() - package):
        problems.append(f"missing from the wheel: {n}")
    for n in sorted(package - expected_package_files()):
        problems.append(f"not in the source tree (stale build?): {n}")
    compact = ep_text.replace(" ", "")
    for line in REQUIRED_ENTRY_POINTS:
        if line.replace(" ", "") not in compact:
            problems.append(f"entry_points.txt lacks {line!r}")
    for field in ("Project-URL: Source", "Project-URL: Bug Tracker", "Requires-Dist: pydicom"):
        if field not in meta_text:
            problems.append(f"METADATA lacks {field!r}")
    if "](docs/" in meta_text:
        problems.append("README has relative links/images (docs/...): they break on PyPI")
    return problems


def check_sdist(path: Path) -> list[str]:
    with tarfile.open(path) as tf:
        names = {"/".join(n.split("/")[1:]) for n in tf.getnames()}
    needed = {"README.md", "setup.cfg", "pyproject.toml", "LICENSE", f"{PACKAGE}/napari.yaml"}
    needed |= expected_package_files()
    needed |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").glob("*.py")}
    return [f"missing from the sdist: {n}" for n in sorted(needed - names)]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    problems = []
    for arg in argv:
        path = Path(arg)
        problems += check_wheel(path) if path.suffix == ".whl" else check_sdist(path)
    for p in problems:
        print(f"check_wheel: {p}")
    if not problems:
        print(f"check_wheel: {', '.join(Path(a).name for a in argv)} OK")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
