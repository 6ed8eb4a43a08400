"""Keep TensorFlow's native start-up and converter logging off the user's terminal.

TensorFlow's C++ code writes straight to file descriptor 2 before Python's logging is set up,
so the only way to keep it off the console is to point that descriptor elsewhere for the
duration. What was captured is kept, so that an error can still show it.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile


class CapturedLog:
    def __init__(self) -> None:
        self.text = ""

    def tail(self, lines: int = 5) -> str:
        return "\n".join(self.text.strip().splitlines()[-lines:])


@contextlib.contextmanager
def native_stderr_captured(enabled: bool = True):
    """Redirect fd 2 into a temporary file while the block runs; yields a CapturedLog."""
    log = CapturedLog()
    if not enabled:
        yield log
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield log
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            log.text = sink.read().decode(errors="replace")
