"""The image installs what its settings can ask for."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def installed_extras() -> set[str]:
    """The extras of `.` that the Dockerfile's `pip install` lines name."""
    extras: set[str] = set()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("RUN pip install"):
            for group in re.findall(r"\.\[([^\]]*)\]", line):
                extras |= {name.strip() for name in group.split(",")}
    return extras


def test_the_image_installs_the_rocksdb_extra_so_that_meterline_store_rocksdb_imports() -> None:
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert "rocksdb" in optional
    assert "rocksdb" in installed_extras()
