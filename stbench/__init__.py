"""stbench: a benchmark suite for data-efficient spatio-temporal forecasting."""
__version__ = "0.1.0"


class UserError(Exception):
    """Bad input from the user: the CLI prints the message on one line and exits with code 2."""


class StoreError(Exception):
    """The results store could not be written (e.g. a full disk); nothing partial was left behind."""


def warn(message: str) -> None:
    """One line ``stbench: warning: ...`` on stderr (the CLI's style; Python's warnings print two)."""
    import sys

    print(f"stbench: warning: {message}", file=sys.stderr, flush=True)
