"""Test cases: the same program run once per case, each as a fresh process in a fresh work directory.

Between two cases the runner makes sure nothing of the first is left for the second to see:
every process but itself (and, under gVisor, the process already forked for the next case, in a
PID namespace of its own) is SIGKILLed and reaped, and every place the code can write is emptied
(/work, /tmp, /dev/shm, /dev/mqueue, System V IPC objects), whatever the code did to it (modes
taken away, fifos, sockets, deep trees). When that cannot be done the run stops with a setup
failure: a case never runs beside another case's leftovers.

Each case ends as one frame (KIND_CASE): its kind, exit, error, time and output (kept up to
caps.outputBytes per stream, counted in full). The host checks every field again."""

import base64
import ctypes
import os
import signal
import stat
import time

from .memory import since
from .payload import make_out_dir, safe_member_path, write_new_file

KIND_FINISHED, KIND_TIMEOUT, KIND_OOM, KIND_OUTPUT_LIMIT = "finished", "timeout", "oom", "output_limit"
# Where the code can write. /work and /tmp are the container's own tmpfs mounts; /dev/shm and
# /dev/mqueue are private to the container (IpcMode private) but shared by all of its processes.
WRITABLE = ("/work", "/tmp", "/dev/shm", "/dev/mqueue")
SWEEP_LIMIT_S = 5.0
IPC_RMID = 0


class CaseError(Exception):
    """The runner could not give a case a clean start: the run stops (a setup failure)."""


def empty_dir(path):
    """Removes everything below path (not path itself), never following a link and whatever modes
    the code left. Depth-independent: it walks with chdir and keeps names, not descriptors (the
    code may have nested directories deeper than the descriptor limit)."""
    os.chdir(path)
    names = []  # the directories entered below path, outermost first
    try:
        while True:
            inner = None
            with os.scandir(".") as it:
                for entry in it:
                    st = os.lstat(entry.name)
                    if not stat.S_ISDIR(st.st_mode):
                        os.unlink(entry.name)
                        continue
                    try:
                        os.rmdir(entry.name)
                    except OSError:
                        inner = (entry.name, st)
                        break
            if inner is not None:
                name, st = inner
                os.chmod(name, 0o700)  # nothing of the code runs any more: the name is still that directory
                os.chdir(name)
                here = os.stat(".")
                if (here.st_dev, here.st_ino) != (st.st_dev, st.st_ino):
                    raise CaseError("a directory in %s changed while it was emptied" % path)
                names.append(name)
                continue
            if not names:
                return
            os.chdir("..")
            os.rmdir(names.pop())
    finally:
        os.chdir("/")


def writable_places(candidates=WRITABLE):
    """{path: mode} of the places to empty between cases, read before the first case runs."""
    places = {}
    for path in candidates:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and os.access(path, os.W_OK | os.X_OK):
            places[path] = stat.S_IMODE(st.st_mode)
    return places


def wipe(places):
    """Empties every writable place and gives back the modes they had before the first case."""
    for path, mode in places.items():
        try:
            if stat.S_IMODE(os.lstat(path).st_mode) != mode:
                os.chmod(path, mode)
        except OSError:
            pass  # not ours to chmod (/tmp is root's): then the code could not change it either
        try:
            empty_dir(path)
        except CaseError:
            raise
        except OSError as e:
            raise CaseError("cannot empty %s between test cases: %s" % (path, e))
    remove_sysv_ipc()


def remove_sysv_ipc(proc="/proc/sysvipc"):
    """System V shared memory, message queues and semaphores outlive their processes: removed.
    (Under gVisor each case also gets an IPC namespace of its own.)"""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return
    calls = {"shm": lambda i: libc.shmctl(i, IPC_RMID, None),
             "msg": lambda i: libc.msgctl(i, IPC_RMID, None),
             "sem": lambda i: libc.semctl(i, 0, IPC_RMID)}
    for name, remove in calls.items():
        for ident in sysv_ids(os.path.join(proc, name)):
            remove(ident)


def sysv_ids(path):
    """The ids (second column) of a /proc/sysvipc table."""
    try:
        with open(path) as f:
            lines = f.read(1 << 20).splitlines()[1:]
    except OSError:
        return []
    ids = []
    for line in lines:
        parts = line.split()
        if len(parts) > 1 and parts[1].isdigit():
            ids.append(int(parts[1]))
    return ids


def other_pids(keep, proc="/proc"):
    """Every process the runner can see but itself and those in keep."""
    me = os.getpid()
    try:
        names = os.listdir(proc)
    except OSError:
        return []
    return [int(n) for n in names if n.isdigit() and int(n) != me and int(n) not in keep]


def sweep(keep):
    """SIGKILLs and reaps every process but ours (and keep), until none is left: the next case
    must not share the sandbox with anything of this one. Raises CaseError if that fails."""
    end = time.monotonic() + SWEEP_LIMIT_S
    while True:
        left = other_pids(keep)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        reap_others(keep)
        if not left:
            return
        if time.monotonic() > end:
            raise CaseError("%d process(es) of a test case could not be ended" % len(left))
        time.sleep(0.001)


def reap_others(keep):
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        if pid == 0:
            return
        # A kept process that died is found dead when its case comes (its pipe is closed).


def fill_work(root, main_source, files):
    """main.py, the files (path, bytes) and an empty out/ in the emptied work directory."""
    write_new_file(os.path.join(root, "main.py"), main_source)
    for path, data in files:
        target = safe_member_path(root, path)
        if target is not None and path != "main.py":
            try:
                write_new_file(target, data)
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                pass  # a file where another's directory is: the first one stays, as in a plain run
    make_out_dir(os.path.join(root, "out"))


class CaseOutput:
    """A case's two streams, kept up to cap bytes each (the relay counts the totals)."""

    def __init__(self, cap):
        self.cap = cap
        self.kept = {1: bytearray(), 2: bytearray()}

    def emit(self, kind, data):
        buf = self.kept.get(kind)
        if buf is None:
            return
        room = self.cap - len(buf)
        if room > 0:
            buf += data[:room]

    def stream(self, kind, total):
        buf = bytes(self.kept[kind])
        total = max(total, len(buf))
        return {"b64": base64.b64encode(buf).decode("ascii"), "totalBytes": total, "truncated": total > len(buf)}


def case_kind(status, timed_out, flooded, memory_before, memory_after):
    """How a case ended. oom needs the kernel's own count (runc); under gVisor the host learns of
    an OOM only when the whole sandbox is killed for it."""
    if flooded:
        return KIND_OUTPUT_LIMIT
    if timed_out:
        return KIND_TIMEOUT
    failed = status is None or status != 0
    acc = since(memory_before, memory_after)
    kills = acc.get("oomKills") if acc else None
    if failed and isinstance(kills, int) and kills > 0:
        return KIND_OOM
    return KIND_FINISHED


def case_report(index, kind, status, error, duration_ms, cpu_ms, output, counts):
    """The case frame's JSON. A case the runner ended (timeout, flood) has no exit code of its own."""
    exit_code, signum = None, None
    if kind in (KIND_FINISHED, KIND_OOM) and status is not None:
        code = os.waitstatus_to_exitcode(status)
        signum = -code if code < 0 else None
        exit_code = code if signum is None else 128 + signum
    return {
        "v": 1,
        "index": index,
        "kind": kind,
        "exitCode": exit_code,
        "signal": signum,
        "error": error if kind == KIND_FINISHED or kind == KIND_OOM else None,
        "durationMs": round(max(0.0, duration_ms), 1),
        "cpuMs": cpu_ms,
        "stdout": output.stream(1, counts.get(1, 0)),
        "stderr": output.stream(2, counts.get(2, 0)),
    }

