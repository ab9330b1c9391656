"""Installed as a user installs it: a plain (non-editable) wheel must carry every module.

An editable install maps the source tree and hides a package the wheel leaves out
(it once left out ``rayfolio.training.models``), so this builds the wheel from a
clean copy of the tree, installs it into a directory of its own, and imports every
module from there with the repository off ``sys.path``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOT_SHIPPED = {"tests", "bench", "build", "dist"}


def _source_modules() -> set[str]:
    """Every module of the tree as ``rayfolio.<folder>...``: what the wheel must hold."""
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "*.py"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    modules = set()
    for path in map(Path, tracked):
        if len(path.parts) < 2 or path.parts[0] in NOT_SHIPPED or not (REPO / path.parts[0] / "__init__.py").exists():
            continue
        parts = path.with_suffix("").parts
        modules.add(".".join(("rayfolio", *(parts[:-1] if parts[-1] == "__init__" else parts))))
    return modules


def _tracked(folder: Path) -> list[Path]:
    """The tracked and new (not ignored) files under ``folder``."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", str(folder)], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    return [REPO / n for n in names if (REPO / n).is_file()]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from a clean copy (tracked and new files, no build leftovers), installed
    without dependencies into its own directory."""
    work = tmp_path_factory.mktemp("wheel")
    copy = work / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()  # fmt: skip
    for name in files:
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(work / "dist"), str(copy)], capture_output=True, text=True)  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (work / "dist").glob("rayfolio-*.whl")
    target = work / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                           str(wheel)], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return target


def _isolated_python(target: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Python with the wheel's directory first and this environment's dependencies after it, but
    without the editable install's path hooks (``-S``: no site, so no ``.pth`` files) and without
    the repository (run elsewhere, no PYTHONPATH)."""
    deps = sysconfig.get_paths()["purelib"]
    prelude = f"import sys; sys.path[:0] = [{str(target)!r}]; sys.path.append({deps!r})\n"
    return subprocess.run([sys.executable, "-S", "-c", prelude + code], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)})  # fmt: skip


def test_the_wheel_holds_every_module(installed):
    shipped = {
        ".".join(("rayfolio", *p.relative_to(installed / "rayfolio").with_suffix("").parts)).removesuffix(".__init__")
        for p in (installed / "rayfolio").rglob("*.py")
    }
    missing = _source_modules() - shipped
    assert not missing, f"the wheel leaves out {sorted(missing)}"
    assert (installed / "rayfolio" / "cluster" / "serve_config.yaml").is_file()  # read by `rayfolio serve`
    # The console and the API docs' pages with their vendored libraries and licences (serving/console.py).
    console = installed / "rayfolio" / "serving" / "console"
    source = {p.relative_to(REPO / "serving" / "console") for p in _tracked(REPO / "serving" / "console")}
    missing = sorted(str(p) for p in source if not (console / p).is_file())
    assert not missing, f"the wheel leaves out console files {missing}"
    for page in ("apidocs/swagger.html", "apidocs/redoc.html", "vendor/README.txt"):
        assert (console / page).is_file(), page
    unlicensed = [d.name for d in (console / "vendor").iterdir() if d.is_dir() and not list(d.glob("LICENSE*"))]
    assert not unlicensed, f"vendored without their LICENSE file: {unlicensed}"


def test_every_module_imports_from_the_wheel(installed, tmp_path):
    modules = sorted(_source_modules())
    code = (
        "import importlib, pathlib\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert pathlib.Path(module.__file__).is_relative_to({str(installed)!r}), (name, module.__file__)\n"
        "print('imported', len(" + repr(modules) + "))\n"
    )
    done = _isolated_python(installed, code, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"imported {len(modules)}" in done.stdout


def test_the_installed_cli_answers_from_another_directory(installed, tmp_path):
    code = (
        "import sys\nfrom rayfolio.cluster.cli import main\n"
        f"sys.exit(main(['models', 'list', '--registry', {str(tmp_path / 'registry')!r}]))\n"
    )
    done = _isolated_python(installed, code, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "lstm" in done.stdout and "no registered versions" in done.stdout


def test_the_docker_image_installs_the_same_way():
    """The image (and so every KubeRay pod) gets a plain, non-editable install of the whole
    copied tree; nothing the wheel needs is left out of the build context."""
    dockerfile = (REPO / "Dockerfile").read_text()
    installs = [line for line in dockerfile.splitlines() if "pip install" in line and "rayfolio" in line]
    assert installs, "the Dockerfile installs rayfolio with pip"
    for line in installs:
        assert not re.search(r"(^|\s)(-e|--editable)(\s|$)", line), f"editable install in the image: {line}"
    copied = re.search(r"^COPY\s+(?:--\S+\s+)*\.\s+(\S+)", dockerfile, re.M)
    assert copied, "the Dockerfile copies the build context"
    tree = re.compile(rf"""["']?{re.escape(copied.group(1))}(\[[\w,]+\])?["']?$""")  # with extras, e.g. [export]
    assert any(tree.search(line.rstrip()) for line in installs), "it installs the copied tree"
    ignored = [p.strip().rstrip("/") for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip()]
    needed = {"setup.py", "pyproject.toml", "README.md"} | {m.split(".")[1] for m in _source_modules()}
    assert not needed & set(ignored), f".dockerignore leaves out {sorted(needed & set(ignored))}"
