"""The README tour's `finscore compress fraud --plan quick`: it passes its own gate on its default
data, `--seed` changes training but not the data, a failed gate names what to change, every
registered version keeps its own report, and the result table fits 80 columns."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from finscore.app.cli.compress import compress, load
from finscore.models.registry import Registry


def _compress(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        compress,
        ["fraud", "--registry", str(tmp_path / "registry"), "--report", str(tmp_path / "reports"),
         *args],
        terminal_width=80,
    )  # fmt: skip
    return result.exit_code, result.output


def test_the_quick_plan_passes_its_gate_on_its_default_data(tmp_path) -> None:  # noqa: ANN001
    """~15 s: the tour's command exactly (default data, seed, epochs and tolerance)."""
    code, out = _compress(tmp_path, "--plan", "quick")
    assert code == 0, out
    assert "gate failed" not in out.lower()
    assert [m.version for m in Registry(tmp_path / "registry").list("fraud")] == ["1"]
    assert (tmp_path / "reports" / "v1" / "report.md").exists()
    table = [line for line in out.splitlines() if str(tmp_path) not in line]
    assert max(len(line) for line in table) <= 80, out


def test_seed_changes_training_not_the_data() -> None:
    _, a = load("fraud", "sim", None, 0, True, (300, 40))
    _, b = load("fraud", "sim", None, 0, True, (300, 40))
    _, c = load("fraud", "sim", None, 1, True, (300, 40))
    assert a.fingerprint == b.fingerprint != c.fingerprint  # the data seed, not --seed
    code_data = compress.commands["fraud"].params
    assert "data_seed" in {p.name for p in code_data}


def test_a_failed_gate_names_what_to_change(tmp_path) -> None:  # noqa: ANN001
    code, out = _compress(
        tmp_path, "--sim-size", "300", "40", "--epochs", "1", "--teacher-epochs", "1",
        "--tolerance", "-1",
    )  # fmt: skip
    assert code == 1, out
    assert "accuracy gate failed" in out
    hint = [line for line in out.splitlines() if line.startswith("hint:")]
    assert hint and "--plan default" in hint[0] and "--tolerance" in hint[0], out
    assert Registry(tmp_path / "registry").list("fraud") == []


def test_each_registered_version_keeps_its_report(tmp_path) -> None:  # noqa: ANN001
    tiny = ["--sim-size", "300", "40", "--epochs", "1", "--teacher-epochs", "1", "--tolerance", "1"]
    for seed in ("0", "1"):
        code, out = _compress(tmp_path, *tiny, "--seed", seed)
        assert code == 0, out
    reports = tmp_path / "reports"
    first, second = (reports / "v1" / "report.md"), (reports / "v2" / "report.md")
    assert first.exists() and second.exists()
    assert "v1" in first.read_text().splitlines()[0] and "v2" in second.read_text().splitlines()[0]
    assert "seed 0" in first.read_text() and "seed 1" in second.read_text()
