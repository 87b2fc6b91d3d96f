"""The autoencoder, GAN & diffusion study: the importable library behind the DVC stages.

Nothing here reads argv or assumes a working directory; the Typer app in `stages/` does the wiring.
"""


class StudyError(Exception):
    """Bad input a user can fix (params, data, checkpoints): shown as one line, never as a traceback."""


def brief(exc: BaseException, limit: int = 160) -> str:
    """An exception as a short single line: its type and the first line of its message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
