"""The runner's loop while the code runs: relay its output as frames, and do init's duties.

The runner is PID 1 of the container. Signals sent from inside the PID namespace cannot reach an
init that has no handler for them (runc's kernel drops them; under gVisor, which does not, the code
runs in a PID namespace of its own where the runner has no number at all). As init it reaps every
process of the sandbox (orphans become its children), and once the code's own process has exited it
SIGKILLs everything left, so no daemonised grandchild can hold a pipe open or outlive the run."""

import ctypes
import json
import os
import selectors
import signal
import time

from .child import EXIT_MARK
from .protocol import CHUNK, KIND_STDERR, KIND_STDOUT

PTRACE_DETACH = 17
# The result pipe's bytes kept for a run without figures (a single run's are added: main.py).
RESULT_LIMIT = 1 << 20
# An exit mark is a few dozen bytes: its line is looked for in no more than this.
EXIT_MARK_MAX = 256


class Relay:
    def __init__(self, pid, out_r, err_r, res_r, flood_bytes, emit, deadline=None, result_limit=RESULT_LIMIT):
        self.pid = pid
        # (group or None) -> None: ends the code's processes. run_tests replaces it for a test case
        # under gVisor, which kills its PID namespace only, sparing the process for the next case.
        self.kill = kill_all
        self.deadline = deadline  # time.monotonic() by which the code's process must be over, or None
        self.timed_out = False
        self.fds = {out_r: KIND_STDOUT, err_r: KIND_STDERR, res_r: 0}
        self.flood_bytes = flood_bytes
        self.emit = emit  # (kind, bytes) -> None: one frame on the runner's stdout
        self.counts = {KIND_STDOUT: 0, KIND_STDERR: 0}
        # What the code's process says on its result pipe: its error, its figures (up to the caps the
        # runner computed result_limit from), its exit mark. A bytearray: appending stays linear.
        self.result = bytearray()
        self.result_limit = result_limit
        # Where to look for the exit mark next (never the whole result again); None: no more looking.
        self.mark_from = 0
        self.status = None
        self.cpu_ms = None
        self.wall_ms = None  # the program's own wall time, when it said so in its exit mark
        self.flooded = False
        self.reaped = False  # the code's own process has been waited for (its pid is free again)
        # The code's process said it was over (its exit mark), rather than being reaped without a
        # word: killed, crashed, or out of memory before it could write the mark.
        self.end_said = False

    def run(self):
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        signal.set_wakeup_fd(wake_w)
        # A handler only to wake the loop: a SIGCHLD the code sends itself costs one more reap.
        signal.signal(signal.SIGCHLD, lambda *_: None)
        sel = selectors.DefaultSelector()
        for fd, kind in self.fds.items():
            sel.register(fd, selectors.EVENT_READ, kind)
        sel.register(wake_r, selectors.EVENT_READ, -1)
        open_fds = set(self.fds)
        self.reap()
        while open_fds:
            wait = 0.5
            if self.deadline is not None and not self.timed_out:
                wait = min(wait, self.deadline - time.monotonic())
                if wait <= 0:
                    self.timed_out = True
                    self.kill(self.pid)
                    wait = 0.5
            for key, _ in sel.select(timeout=wait):
                fd, kind = key.fd, key.data
                if kind == -1:
                    try:
                        os.read(fd, 512)
                    except BlockingIOError:
                        pass
                    continue
                data = os.read(fd, CHUNK)
                if not data:
                    sel.unregister(fd)
                    open_fds.discard(fd)
                    continue
                self.take(kind, data)
            self.reap()
        while self.status is None:
            self.reap(block=True)
        self.reap()  # whatever the final SIGKILL left as zombies
        signal.set_wakeup_fd(-1)
        sel.close()
        os.close(wake_r)
        os.close(wake_w)
        return self

    def take(self, kind, data):
        if kind == 0:
            if len(self.result) < self.result_limit:
                self.result += data
                if self.status is None:
                    self.exit_mark()
            return
        self.counts[kind] += len(data)
        if self.counts[kind] > self.flood_bytes:
            if not self.flooded:
                self.flooded = True
                self.kill(self.pid)
            return
        self.emit(kind, data)

    def exit_mark(self):
        """The program said it is over (exit code, CPU time): as good as reaping it, without waiting
        for its memory to be freed."""
        if self.mark_from is None:
            return
        start = self.result.find(EXIT_MARK, self.mark_from)
        if start < 0:
            self.mark_from = max(0, len(self.result) - len(EXIT_MARK) + 1)
            return
        self.mark_from = start
        end = self.result.find(b"\n", start, start + EXIT_MARK_MAX)
        if end < 0 and len(self.result) < start + EXIT_MARK_MAX:
            return  # the rest of the mark is still on its way
        parsed = parse_exit_mark(bytes(self.result[start:end + 1])) if end >= 0 else None
        if parsed is None:
            self.mark_from = None  # only the first mark counts: a malformed one leaves the end to reaping
            return
        code, cpu_ms, wall_ms = parsed
        self.end_said = True
        self.status = code << 8  # a wait status: exited with code
        self.cpu_ms = cpu_ms
        self.wall_ms = wall_ms
        self.kill(None)

    def reap(self, block=False):
        """Collects every child that has changed state: the code's process, orphans, tracees."""
        flags = 0 if block else os.WNOHANG
        while True:
            try:
                done, st, usage = os.wait4(-1, flags)
            except ChildProcessError:
                if self.status is None:
                    self.status = 0  # cannot happen: the code's process is our child until reaped
                return
            except InterruptedError:
                continue
            if done == 0:
                return
            if os.WIFSTOPPED(st):
                release_tracee(done, st)  # not an exit: a process made us its tracer
            elif done == self.pid and self.status is None:
                self.reaped = True
                self.status = st
                self.cpu_ms = round((usage.ru_utime + usage.ru_stime) * 1000, 1)
                # The user's program is over: nothing it started may outlive it or hold our pipes.
                self.kill(None)
            elif done == self.pid:
                self.reaped = True
            if block:
                return


def process_cpu_ms(pid, waited_children=False):
    """CPU time a live process has used so far (user + system), from /proc, or None. With
    waited_children, that of the children it has waited for is added."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        ticks = (11, 12, 13, 14) if waited_children else (11, 12)
        return sum(int(fields[i]) for i in ticks) * 1000.0 / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def parse_exit_mark(data):
    """(exit code, CPU ms, wall ms) from the first complete exit mark on the result pipe, or None.
    The times are None when absent or implausible."""
    start = data.find(EXIT_MARK)
    if start < 0:
        return None
    end = data.find(b"\n", start)
    if end < 0:
        return None
    try:
        fields = json.loads(data[start + len(EXIT_MARK):end])
        code, cpu_ms = fields[0], fields[1]
        wall_ms = fields[2] if len(fields) == 3 else None
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    if not isinstance(fields, list) or len(fields) > 3:
        return None
    if not isinstance(code, int) or isinstance(code, bool) or not 0 <= code <= 255:
        return None
    if not isinstance(cpu_ms, (int, float)) or isinstance(cpu_ms, bool) or not 0 <= cpu_ms < 1e10:
        cpu_ms = None
    if not isinstance(wall_ms, (int, float)) or isinstance(wall_ms, bool) or not 0 <= wall_ms < 1e10:
        wall_ms = None
    return code, cpu_ms, wall_ms


def kill_all(group):
    if group is not None:
        try:
            os.killpg(group, signal.SIGKILL)
        except OSError:
            pass
    try:
        os.kill(-1, signal.SIGKILL)  # every process but init, which is us
    except OSError:
        pass


def release_tracee(pid, st):
    """A process called ptrace(PTRACE_TRACEME), making the runner its tracer, and stopped on a
    signal (possible under gVisor; pybox's seccomp profile refuses ptrace under runc). Detach and
    pass the signal on, so it runs as if untraced; if that fails, end it: it is never left stopped."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.ptrace(PTRACE_DETACH, pid, None, ctypes.c_void_p(os.WSTOPSIG(st))) == 0:
            return
    except Exception:
        pass
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
