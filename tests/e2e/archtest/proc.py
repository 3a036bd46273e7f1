"""Running commands: bounded waits, background output collectors and a pty driver."""

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import threading
import time

POLL_INTERVAL = 0.01  # seconds between two looks at something we wait for


class WaitTimeout(AssertionError):
    pass


def wait_until(predicate, timeout, what, interval=POLL_INTERVAL):
    """Polls `predicate` until it returns a truthy value (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def run(argv, timeout=60, check=False, env=None, input=None):
    """Runs argv to completion, capturing stdout and stderr as text."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                            env=env, input=input, stdin=None if input else subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv} exited {result.returncode}\nstdout: {result.stdout}\n"
                             f"stderr: {result.stderr}")
    return result


def stop_process(proc, timeout=20):
    """SIGTERM the process by pid, wait, then SIGKILL; returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


class _Collector:
    """Reads one pipe in a thread; lets the test wait for text to appear."""

    def __init__(self, pipe):
        self._pipe = pipe
        self._chunks = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        for chunk in iter(lambda: os.read(self._pipe.fileno(), 65536), b""):
            with self._cond:
                self._chunks.append(chunk)
                self._cond.notify_all()
        self._pipe.close()

    def text(self):
        with self._cond:
            return b"".join(self._chunks).decode(errors="replace")

    def wait_for(self, needle, timeout, what=None):
        deadline = time.monotonic() + timeout
        with self._cond:
            while needle not in b"".join(self._chunks).decode(errors="replace"):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(f"timed out after {timeout}s waiting for "
                                      f"{what or repr(needle)}; got {self.text()!r}")
                self._cond.wait(left)

    def join(self, timeout):
        self._thread.join(timeout)


class Background:
    """A started command whose stdout and stderr are collected separately."""

    def __init__(self, argv, env=None):
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.stdout = _Collector(self.proc.stdout)
        self.stderr = _Collector(self.proc.stderr)

    def wait(self, timeout):
        """Waits for exit; returns (status, stdout, stderr)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise WaitTimeout(f"{self.argv} did not exit within {timeout}s; "
                              f"stdout {self.stdout.text()!r} stderr {self.stderr.text()!r}")
        self.stdout.join(5)
        self.stderr.join(5)
        return self.proc.returncode, self.stdout.text(), self.stderr.text()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def run_in_pty(argv, timeout=60, env=None, rows=24, cols=80):
    """Runs argv with a fresh pty (rows x cols) as its stdin, stdout and stderr.

    Returns (status, output) where output is everything the program wrote to the
    terminal, with "\r\n" (and "\r\r\n") turned into "\n".
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    try:
        # ctr and docker only need isatty(); a new session keeps our own terminal out of it.
        proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                start_new_session=True, close_fds=True)
    finally:
        os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                proc.wait(10)
                raise WaitTimeout(f"{argv} in a pty did not finish within {timeout}s; "
                                  f"output {b''.join(chunks)!r}")
            ready, _, _ = select.select([master], [], [], min(left, 0.2))
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every slave fd is closed
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            elif proc.poll() is not None:
                # Exited; give a last chance to output still in the pty, then stop.
                ready, _, _ = select.select([master], [], [], 0.05)
                if not ready:
                    break
        status = proc.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        os.close(master)
    # Both the container's and our pty may turn "\n" into "\r\n" (depending on raw mode).
    return status, re.sub(r"\r+\n", "\n", b"".join(chunks).decode(errors="replace"))
