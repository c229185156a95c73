"""The demo makes its first models with the README's own command and defaults (issue 16: it
passed ``--tolerance 0.1`` and retried three seeds, hiding that the tour's command failed its
gate). A unit test of the decision: the CLI runs are recorded and stand in by publishing tiny
real artifacts into a real registry; no broker is involved in this step."""

from __future__ import annotations

import io

from rich.console import Console

from finscore.app.demo import Demo, DemoOptions
from finscore.models.registry import Registry
from finscore.settings import Settings
from tests.artifacts import artifact


def _demo(tmp_path, refusals: int) -> tuple[Demo, list[list[str]], io.StringIO]:  # noqa: ANN001
    s = Settings(registry_dir=tmp_path / "registry", key_dir=tmp_path / "keys")
    out = io.StringIO()
    demo = Demo(s, DemoOptions(workdir=tmp_path / "demo"), Console(file=out, width=200))
    reg, calls, refused = Registry(s.registry_dir), [], {"fraud": 0, "market": 0}

    def run_cli(args: list[str], check: bool = True) -> bool:
        calls.append(args)
        if args[0] == "compress":
            if refused[args[1]] < refusals:  # the gate says no
                refused[args[1]] += 1
                return False
            art = reg.publish(artifact(args[1]))
            if "--promote" in args:
                reg.promote(args[1], art.manifest.version)
        elif args[:2] == ["models", "promote"]:
            reg.promote(args[2], args[3] if len(args) > 3 else reg.list(args[2])[-1].version)
        return True

    demo._run_cli = run_cli  # type: ignore[method-assign]
    return demo, calls, out


def test_the_demo_compresses_with_the_readme_command_and_defaults(tmp_path) -> None:  # noqa: ANN001
    demo, calls, out = _demo(tmp_path, refusals=0)
    demo.ensure_models()
    assert calls == [
        ["compress", "fraud", "--plan", "quick"],  # was: --data sim ... --tolerance 0.1 --seed 0
        ["models", "promote", "fraud"],
        ["compress", "market", "--plan", "quick"],
        ["models", "promote", "market"],
    ]
    assert "refused" not in out.getvalue()


def test_a_refusal_gets_one_more_run_and_the_live_view_says_so(tmp_path) -> None:  # noqa: ANN001
    demo, calls, out = _demo(tmp_path, refusals=1)
    demo.ensure_models()
    compress = [c for c in calls if c[0] == "compress"]
    assert compress[:2] == [["compress", "fraud", "--plan", "quick"],
                            ["compress", "fraud", "--plan", "quick", "--seed", "1"]]  # fmt: skip
    assert "the gate refused the fraud candidate at the default tolerance" in out.getvalue()
    assert Registry(tmp_path / "registry").champion("fraud") is not None
