"""Time from starting ``flordb shell`` to its first prompt, in a pseudo-terminal.

    python bench/shell_startup.py [--runs 7]

Prints the median time to the first prompt, the median of ``python -c pass``
(the interpreter's own floor) and their ratio. Budget: under 1 s.
"""
from __future__ import annotations

import argparse
import os
import pty
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = b"flordb>"


def first_prompt(argv: list[str], env: dict[str, str], timeout: float = 20.0) -> float:
    """Seconds until ``PROMPT`` appears on the terminal of ``argv``; then Ctrl-D."""
    master, slave = pty.openpty()
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                            close_fds=True, start_new_session=True)
    os.close(slave)
    seen = b""
    try:
        while PROMPT not in seen:
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"no prompt after {timeout}s; output: {seen!r}")
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                chunk = os.read(master, 65536)
                if b"\x1b[6n" in chunk:  # answer the cursor-position request like a terminal
                    os.write(master, b"\x1b[1;1R")
                seen += chunk
        elapsed = time.perf_counter() - start
        os.write(master, b"\x04")
        proc.wait(timeout=10)
        return elapsed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def plain(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    exe = shutil.which("flordb", path=str(Path(sys.executable).parent)) or "flordb"
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, FLORDB_HOME=home, TERM=os.environ.get("TERM", "xterm-256color"),
                   COLUMNS="80", LINES="24")
        first_prompt([exe, "shell"], env)  # warm the OS file cache and .pyc files
        shell = [first_prompt([exe, "shell"], env) for _ in range(args.runs)]
    python = [plain([sys.executable, "-c", "pass"]) for _ in range(args.runs)]
    s, p = statistics.median(shell), statistics.median(python)
    print(f"flordb shell, time to first prompt: median {s * 1000:.0f} ms "
          f"(min {min(shell) * 1000:.0f}, max {max(shell) * 1000:.0f}, {args.runs} runs)")
    print(f"python -c pass:                     median {p * 1000:.0f} ms")
    print(f"ratio: {s / p:.1f}x; budget 1000 ms: {'ok' if s < 1.0 else 'OVER'}")
    return 0 if s < 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
