"""Package discovery, the one place it happens: every top-level folder with an
``__init__.py`` (except tests/ and bench/) installs as ``rayfolio.<folder>``,
with all of its subpackages found automatically. pyproject.toml holds the rest
of the metadata; setuptools cannot add a package-name prefix from there."""

from setuptools import find_packages, setup

NOT_SHIPPED = ("tests", "tests.*", "bench", "bench.*", "build", "build.*", "dist", "dist.*")
FOUND = find_packages(exclude=NOT_SHIPPED)
TOP_LEVEL = sorted({name.split(".")[0] for name in FOUND})

setup(
    packages=[f"rayfolio.{name}" for name in FOUND],
    package_dir={f"rayfolio.{name}": name for name in TOP_LEVEL},
)
