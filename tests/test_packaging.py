"""What the distributions carry (tools/check_wheel.py) and where the version lives.

`make package-check` (part of `make test`) builds the real sdist and wheel and installs the wheel
into a fresh venv; these tests keep the checker itself honest on small hand-made archives.
"""

from __future__ import annotations

import importlib.util
import zipfile
from importlib.metadata import version
from pathlib import Path

import napari_medseg

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_wheel", ROOT / "tools" / "check_wheel.py")
check_wheel = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_wheel)


def test_version_has_one_source():
    assert "version = attr: napari_medseg.__version__" in (ROOT / "setup.cfg").read_text()
    assert version("napari-medseg") == napari_medseg.__version__


def _wheel(tmp_path: Path, extra: dict[str, str], drop: str | None = None) -> Path:
    files = {name: "" for name in check_wheel.expected_package_files() if name != drop}
    files["napari_medseg-0.1.0.dist-info/entry_points.txt"] = "\n".join(
        check_wheel.REQUIRED_ENTRY_POINTS
    )
    files["napari_medseg-0.1.0.dist-info/METADATA"] = (
        "Project-URL: Source, x\nProject-URL: Bug Tracker, y\nRequires-Dist: pydicom\n"
    )
    files.update(extra)
    path = tmp_path / "napari_medseg-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def test_check_wheel_accepts_the_expected_contents(tmp_path):
    assert check_wheel.check_wheel(_wheel(tmp_path, {})) == []


def test_check_wheel_flags_extras_and_missing_files(tmp_path):
    bad = _wheel(
        tmp_path,
        {"tests/test_x.py": "", "napari_medseg/__pycache__/cli.cpython-311.pyc": ""},
        drop="napari_medseg/napari.yaml",
    )
    problems = "\n".join(check_wheel.check_wheel(bad))
    assert "outside the package: tests/test_x.py" in problems
    assert "must not ship: napari_medseg/__pycache__/cli.cpython-311.pyc" in problems
    assert "missing from the wheel: napari_medseg/napari.yaml" in problems


def test_readme_images_and_links_work_from_pypi():
    text = (ROOT / "README.md").read_text()
    assert "](docs/" not in text and "](BENCHMARKS.md" not in text
    assert (
        "https://raw.githubusercontent.com/napari-medseg/napari-medseg/main/docs/screenshot.png"
        in text
    )
