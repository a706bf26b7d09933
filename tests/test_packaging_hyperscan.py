"""The environment marker of the hyperscan dependency matches the platforms hyperscan 0.9.1 has wheels for.

Wheels (pip download --no-deps --only-binary=:all: --platform P --python-version 3.11..3.13 hyperscan==0.9.1,
2026-12-05): manylinux2014 x86_64, manylinux_2_28 aarch64, musllinux_1_2 x86_64 and aarch64 (and macOS and
Windows, where runnerlib does not run); none for i686, armv7l, ppc64le, s390x. A marker that matched a platform
without a wheel would make pip build Hyperscan from source (and fail without its C library); one that missed
a platform with a wheel leaves it on the slower fallback (the previous marker: x86_64 only).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _hyperscan() -> Requirement:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (req,) = [Requirement(d) for d in deps if Requirement(d).name == "hyperscan"]
    return req


def _env(machine: str, platform: str = "linux") -> dict[str, str]:
    return {"sys_platform": platform, "platform_machine": machine, "python_version": "3.11",
            "python_full_version": "3.11.9", "implementation_name": "cpython", "os_name": "posix",
            "platform_system": platform.capitalize(), "platform_release": "", "platform_version": "",
            "platform_python_implementation": "CPython", "implementation_version": "3.11.9", "extra": ""}


@pytest.mark.parametrize(("machine", "has_wheel"), [
    ("x86_64", True),     # manylinux2014 and musllinux_1_2 (Alpine) report the same machine
    ("aarch64", True),    # manylinux_2_28 and musllinux_1_2
    ("i686", False), ("armv7l", False), ("ppc64le", False), ("s390x", False),
])
def test_marker_matches_the_wheels(machine: str, has_wheel: bool) -> None:
    req = _hyperscan()
    assert req.marker is not None and req.marker.evaluate(_env(machine)) is has_wheel
    # 0.9.1 is the first release with the aarch64 and musllinux wheels: an older one would be built from source.
    assert req.specifier.contains("0.9.1") and not req.specifier.contains("0.9.0")


def test_previous_marker_missed_arm_runners() -> None:
    old = Marker("platform_machine == 'x86_64' and sys_platform == 'linux'")
    assert not old.evaluate(_env("aarch64")) and _hyperscan().marker.evaluate(_env("aarch64"))  # type: ignore[union-attr]
