"""``finscore bench``: the end-to-end benchmark (:func:`run_bench`) and, behind the ``bench``
extra, the per-event Faust peer it compares against (:mod:`finscore.app.bench.faust_peer`,
never imported here: faust is not a dependency of the workers)."""

from finscore.app.bench.run import Result, run_bench

__all__ = ["Result", "run_bench"]
