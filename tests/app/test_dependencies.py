"""Dependencies point one way: workers never load torch; streams and compression never meet."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imports_of(folder: str) -> set[str]:
    """Every module name imported by the .py files of a top-level folder."""
    names: set[str] = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
    return names


def test_importing_streams_and_the_worker_cli_never_loads_torch() -> None:
    code = (
        "import sys, finscore.streams, finscore.streams.worker, finscore.app.cli.main, finscore.app.demo;"
        "bad = [m for m in ('torch', 'finscore.compression') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_streams_never_imports_compression_or_torch() -> None:
    bad = {m for m in imports_of("streams") if m.startswith(("finscore.compression", "torch"))}
    assert not bad


def test_compression_never_imports_streams_or_kafka_clients() -> None:
    bad = {
        m
        for m in imports_of("compression")
        if m.startswith(("finscore.streams", "confluent_kafka", "faust"))
    }
    assert not bad


def test_schemas_and_shared_features_import_neither_side() -> None:
    for folder in ("schemas", "finscore/features", "finscore/sim"):
        bad = {
            m
            for m in imports_of(folder)
            if m.startswith(
                ("finscore.streams", "finscore.compression", "torch", "confluent_kafka")
            )
            and m != "confluent_kafka.schema_registry"  # the codec's registry client (lazy)
        }
        assert not bad, (folder, bad)


def test_no_top_level_package_shadows_the_standard_library() -> None:
    import finscore.compression
    import finscore.schemas
    import finscore.streams

    for mod in (finscore.compression, finscore.schemas, finscore.streams):
        assert mod.__name__.startswith("finscore.")
    top = ROOT / "finscore.egg-info" / "top_level.txt"
    if top.exists():
        assert top.read_text().split() == ["finscore"]
