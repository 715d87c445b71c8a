"""Imported by multiprocessing's fork server alone (pool.PRELOAD, last): the server's exit skips
Python's teardown of the torch it imported.

The server holds the stage's stdout and stderr, so a caller that reads them to their end (a
pipe, `subprocess.run(capture_output=True)`, the test suite) waits for it: once the stage's
process is gone the server ends, and its teardown with torch loaded took 1.1-1.3 s on the
cpu-box. It has nothing of the user's to flush: it only forks workers, which leave by their own
`os._exit`. Imported anywhere else, this module does nothing. (An error of the server's own
would also end it with exit code 0; nothing reads that code.)
"""

from __future__ import annotations

import atexit
import os
import sys
import types
from typing import Optional


def _in_the_fork_server() -> bool:
    """Whether this import runs in the fork server's preloading (multiprocessing.forkserver.main
    on the stack), not in a process the server forked (main's frame is on its stack too, and it
    holds the server's descriptors)."""
    server = sys.modules.get("multiprocessing.forkserver")
    if server is None or server._forkserver._forkserver_alive_fd is not None:
        return False
    frame: Optional[types.FrameType] = sys._getframe(1)
    while frame is not None:
        if frame.f_code is server.main.__code__:
            return True
        frame = frame.f_back
    return False


ARMED = _in_the_fork_server()  # workers inherit the server's value
if ARMED:
    atexit.register(os._exit, 0)  # the last handler registered runs first
