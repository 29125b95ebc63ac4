"""The image's build copies what the package is made of: a package left out of the Dockerfile
would install without it, and the image would fail only when that code is first imported."""

from __future__ import annotations

import re
import tomllib

from tests.support.paths import ROOT


def test_the_dockerfile_copies_every_package_the_project_ships() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shipped = {
        name.rstrip("*") for name in project["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, flags=re.MULTILINE))
    assert copied == shipped
    for package in shipped:
        assert (ROOT / package / "__init__.py").is_file(), package
