"""Running a command with its stderr on a pseudo-terminal, as in an operator's shell (for
the progress lines archctl draws only on a terminal)."""

import os
import pty
import subprocess
import time


def run_on_terminal(argv, env=None, timeout=300):
    """(exit code, what the terminal showed, stdout, seconds) of `argv` with stderr on a
    pseudo-terminal and stdout on a pipe."""
    leader, follower = pty.openpty()
    try:
        t0 = time.monotonic()
        p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=follower, text=True,
                             stdin=subprocess.DEVNULL)
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the command ended, the terminal's other end is closed
                break
            if not chunk:
                break
            shown += chunk
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, shown.decode(errors="replace"), out, time.monotonic() - t0
    finally:
        os.close(leader)
