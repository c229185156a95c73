"""Hypothesis profiles of the fuzz suite.

``ci`` (the default): few examples per property, so the whole suite fits the default test
command's budget (about a minute). ``soak``: ``FINSCORE_FUZZ_EXAMPLES`` examples per property
(default 2,000), used by the ``slow``-marked targets of ``test_soak.py``; select it for every
property with ``FINSCORE_FUZZ_PROFILE=soak``. No example database is written (a failure prints
its reproduction blob instead).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,
    "database": None,
    "print_blob": True,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
}
CI_EXAMPLES = int(os.environ.get("FINSCORE_FUZZ_CI_EXAMPLES", "25"))
SOAK_EXAMPLES = int(os.environ.get("FINSCORE_FUZZ_EXAMPLES", "2000"))

settings.register_profile("ci", max_examples=CI_EXAMPLES, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("soak", max_examples=SOAK_EXAMPLES, **_COMMON)  # type: ignore[arg-type]
settings.load_profile(os.environ.get("FINSCORE_FUZZ_PROFILE", "ci"))
