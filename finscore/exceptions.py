"""The root of every error finscore raises on purpose."""


class FinscoreError(Exception):
    """Base class of all finscore errors; each package subclasses it in its own exceptions.py.

    ``hint`` is one sentence telling a person what to do about it; the CLI prints
    ``str(error)`` and the hint, never a traceback.
    """

    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint
