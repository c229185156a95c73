"""`finscore produce TOPIC FILE --family F`: a declared family's topics take their schema and
key from the declaration; anything else is a usage error before any connection."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from finscore.app.cli import cli
from finscore.app.console.produce import file_events
from finscore.families.german_credit import simulate_applications, write_family_csv

UNREACHABLE = {"FINSCORE_BOOTSTRAP_SERVERS": "127.0.0.1:1"}


def test_a_topic_outside_the_family_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text("a\n1\n")
    r = CliRunner().invoke(cli, ["produce", "fraud-flags", str(f), "--family", "credit"],
                           env=UNREACHABLE)  # fmt: skip
    assert r.exit_code == 2 and "credit-applications" in r.output and "credit-outcomes" in r.output


def test_family_needs_a_file() -> None:
    r = CliRunner().invoke(cli, ["produce", "credit-applications", "--family", "credit"],
                           env=UNREACHABLE)  # fmt: skip
    assert r.exit_code == 2 and "--family applies to records from FILE" in r.output


def test_a_family_csv_becomes_records_of_its_schema_keyed_by_its_key(tmp_path: Path) -> None:
    from finscore.app.cli.bus import _family_topic
    from finscore.families.spec import family_file

    apps = simulate_applications(5, seed=3)
    path = write_family_csv(tmp_path / "apps.csv", apps)
    schema, key = _family_topic(family_file("credit"), "credit-applications")
    assert key == "applicant_id" and isinstance(schema, dict)
    bad: list[tuple[int, str]] = []
    with path.open() as fh:
        events = list(file_events(fh, "credit-applications", schema, key_field=key,
                                  on_reject=lambda n, r: bad.append((n, r))))  # fmt: skip
    assert not bad
    assert [e[1] for e in events] == [a["applicant_id"] for a in apps.applications]
    codec = events[0][2]
    assert not isinstance(codec, str)
    assert [codec.decode(codec.encode(e[3])) for e in events] == [e[3] for e in events]
    assert [e[3]["purpose"] for e in events] == [a["purpose"] for a in apps.applications]
