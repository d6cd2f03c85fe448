"""What the wheels carry: the product's holds the f1backfill package and nothing of the
development sandbox; the sandbox's holds its package data (the CRDs and samples the demo
and `f1sandbox seed` read), so both work from an installed wheel, as in the demo image.

Built with hatchling, the build backend of both pyprojects, from the working tree (no
network, well under a second each).
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SANDBOX = ROOT / "operator" / "f1sandbox"


def build_wheel(project: Path, into: Path) -> zipfile.ZipFile:
    subprocess.run([sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(into)],
                   cwd=project, check=True, capture_output=True, timeout=120)
    (wheel,) = into.glob("*.whl")
    return zipfile.ZipFile(wheel)


def test_the_product_wheel_holds_the_product_package_alone(tmp_path: Path) -> None:
    with build_wheel(ROOT, tmp_path) as wheel:
        names = wheel.namelist()
        (dist_info,) = {n.split("/")[0] for n in names if ".dist-info/" in n}
        entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
    assert dist_info.startswith("f1_backfill-")
    outside = [n for n in names if not n.startswith(("f1backfill/", f"{dist_info}/"))]
    assert outside == []
    assert "f1backfill/cli.py" in names and "f1backfill/db/queries.sql" in names
    assert {f"f1backfill/frontdoor/page/{name}" for name in
            ("index.html", "search.js", "search.css")} <= set(names)
    sandbox = [n for n in names
               if "sandbox" in n or Path(n).name in {"demo.py", "localdb.py", "samples.py"}
               or "fake_openai" in n or n.endswith(".yaml")]
    assert sandbox == []
    assert "f1sandbox" not in entry_points and "f1backfill = f1backfill.cli:console" in entry_points


def test_the_sandbox_wheel_carries_its_package_data(tmp_path: Path) -> None:
    with build_wheel(SANDBOX, tmp_path) as wheel:
        names = set(wheel.namelist())
    copies = {p.relative_to(SANDBOX).as_posix()
              for p in (SANDBOX / "f1sandbox" / "data").rglob("*.yaml")}
    assert copies and copies <= names
    assert {"f1sandbox/crd.py", "f1sandbox/kubeapi/server.py", "f1sandbox/jobrunner.py",
            "f1sandbox/fake_openai.py", "f1sandbox/demo.py"} <= names
    assert not [n for n in names if n.startswith("f1backfill/")]
