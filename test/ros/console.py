"""Drive `resfit-ros operator` through a real pseudo-terminal, as a person at a keyboard does:
its stdin is a terminal (the console switches it to cbreak mode, single keys, no echo), and its
output is read line by line as the terminal shows it."""
from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time


class Console:
    def __init__(self, env: dict, args: tuple[str, ...] = (), cwd: str | None = None):
        master, slave = os.openpty()
        self.proc = subprocess.Popen([sys.executable, "-m", "resfit_ros.cli", "operator", *args],
                                     stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                                     start_new_session=True, close_fds=True)
        os.close(slave)
        self.master = master
        self.buffer = ""
        self.lines: list[str] = []       # every complete line shown so far
        self.read_upto = 0               # lines before this index were returned by expect()

    def _pump(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return
        try:
            chunk = os.read(self.master, 65536).decode(errors="replace")
        except OSError:                  # the console exited: the slave side is closed
            time.sleep(timeout)
            return
        self.buffer += chunk.replace("\r\n", "\n")
        *done, self.buffer = self.buffer.split("\n")
        self.lines.extend(done)

    def press(self, key: str) -> None:
        os.write(self.master, key.encode())

    def expect(self, pattern: str, timeout: float = 15.0) -> str:
        """The first line from the unread ones on that matches `pattern` (regex search); the lines
        up to it are read."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for i in range(self.read_upto, len(self.lines)):
                if rx.search(self.lines[i]):
                    self.read_upto = i + 1
                    return self.lines[i]
            if time.monotonic() > deadline:
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s; the console showed:\n"
                                     + "\n".join(self.lines[-40:]))
            self._pump(0.05)

    def answers(self, since: int) -> list[str]:
        """The lines from index `since` on that answer a key (everything but status lines)."""
        return [line for line in self.lines[since:] if line.strip() and not line.startswith("[status]")]

    def settle(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._pump(0.05)

    def close(self) -> int | None:
        from test.support import stop_process

        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)
        self.settle(0.2)
        os.close(self.master)
        return self.proc.returncode
