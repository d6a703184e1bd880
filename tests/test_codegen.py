"""The committed generated code must be exactly what scripts/gen_protos.py makes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)],
        check=True, capture_output=True,
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated, "codegen produced nothing"
    stale = [str(rel) for rel in generated if (ROOT / rel).read_bytes() != (tmp_path / rel).read_bytes()]
    assert not stale, f"stale generated code (run scripts/gen_protos.py): {stale}"


def test_generated_code_loads_on_pinned_protobuf() -> None:
    import google.protobuf

    from psi_share.v1 import node_pb2

    assert google.protobuf.__version__ == "6.30.2"
    assert "PsiShareNode" in node_pb2.DESCRIPTOR.services_by_name
