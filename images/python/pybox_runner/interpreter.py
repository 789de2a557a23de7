"""A session's interpreter: the forked child that keeps `__main__` alive from one call to the next.

It is set up as a single run's process is (child.py: its own /proc and no capabilities under
gVisor, dumpable, the run's environment, matplotlib's cache), then serves calls from the runner
one at a time over its command pipe: [u32 length][pickle of the call] (the runner's side is
trusted). Each call's end goes back on the result pipe as b"E" + [u32 length] + JSON. Before the
first call it says b"P" (ready) or b"F" + JSON message (it could not set itself up).

The code inherits the result pipe: whatever arrives there is as hostile as the code's output, and
the runner checks it (session.py). stdout and stderr are pipes kept for the interpreter's life; a
call's stdin is a fresh file with the call's bytes.

SIGINT is how the runner stops a call (its timeout, a cancel, a flood): it becomes
KeyboardInterrupt while the call's code runs, and is ignored while the interpreter does its own
bookkeeping, so a late one never breaks the report of a call or the next call's start."""

import io
import json
import linecache
import marshal
import os
import pickle
import signal
import sys
import tempfile
import threading  # noqa: F401  imported now: a program that used up its descriptors cannot import later
import traceback
import types

from . import child as child_mod
from . import rich
from .protocol import write_all
from .text import MESSAGE_LIMIT, TRACEBACK_LIMIT, clip, exception_type_name, exit_code_of, safe_str

WORK = child_mod.WORK
CALL_PREFIX = "<call "
RUNNER_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# Source kept for tracebacks of functions defined in earlier calls: the most recent calls only.
LINECACHE_CALLS = 200

# True only while a call's own code (and what it calls: repr, figures) runs.
_user = [False]


def on_sigint(signum, frame):
    if _user[0]:
        # Raised from C: the traceback ends in the code's own frame, not here.
        signal.default_int_handler(signum, frame)
    # Not the code's time: the runner's interrupt came after the call was over.


def fail(res_w, message):
    try:
        write_all(res_w, b"F" + json.dumps(clip(message, 2000), ensure_ascii=True).encode())
    finally:
        os._exit(70)


def interpreter_main(cmd_r, out_w, err_w, res_w, env, isolated, names):
    """In the forked child: never returns."""
    try:
        # The runner's wake-up descriptor is not ours: a signal here must not write to whatever
        # file later gets that number.
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, on_sigint)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)
        child_mod.close_other_fds((cmd_r, out_w, err_w, res_w))
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")  # at the memory limit the kernel takes the interpreter, not the runner
        except OSError:
            pass
        if isolated:
            try:
                child_mod.private_proc()
                child_mod.drop_capabilities()
            except OSError as e:
                fail(res_w, "the interpreter cannot be isolated: %s" % safe_str(e))
        child_mod.set_dumpable(True)
        child_mod.seed_matplotlib_cache()
        child_mod.preload(names)
        os.chdir(WORK)
        os.environ.clear()
        os.environ.update(env)
        sys.argv = [""]
        sys.path.insert(0, WORK)
        os.setsid()
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.close(out_w)
        os.close(err_w)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8",
                                      errors="backslashreplace", write_through=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                                      errors="backslashreplace", write_through=True)
        sys.__stdout__, sys.__stderr__ = sys.stdout, sys.stderr
        main = types.ModuleType("__main__")
        main.__dict__.update({"__builtins__": __builtins__, "__cached__": None, "__spec__": None,
                              "__package__": None, "__file__": None})
        sys.modules["__main__"] = main
        write_all(res_w, b"P")
    except BaseException as e:
        fail(res_w, "setting up the interpreter failed: %s: %s" % (type(e).__name__, safe_str(e)))
    try:
        serve(cmd_r, res_w, main.__dict__)
    finally:
        os._exit(0)


def read_exactly(fd, n):
    chunks, left = [], n
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def serve(cmd_r, res_w, ns):
    while True:
        head = read_exactly(cmd_r, 4)
        if head is None:
            return  # the runner is gone, or restarts us
        body = read_exactly(cmd_r, int.from_bytes(head, "big"))
        if body is None:
            return
        call = pickle.loads(body)
        result = run_call(ns, call)
        try:
            data = json.dumps(result, ensure_ascii=True, separators=(",", ":")).encode()
        except (TypeError, ValueError):
            # Something the outputs held cannot be sent: the call's end still is.
            result["outputsDropped"] += len(result["outputs"])
            result["outputs"] = []
            data = json.dumps(result, ensure_ascii=True, separators=(",", ":")).encode()
        write_all(res_w, b"E" + len(data).to_bytes(4, "big") + data)


def set_stdin(data):
    """A fresh file with the call's stdin as descriptor 0 and sys.stdin. In memory when it can be
    (a full /tmp must not break a call), else an unlinked file in /tmp, else nothing."""
    fd = None
    try:
        fd = os.memfd_create("pybox-stdin", 0)
    except (AttributeError, OSError):
        try:
            fd, path = tempfile.mkstemp(prefix=".pybox-stdin-", dir="/tmp")
            os.unlink(path)
        except OSError:
            fd = None
    if fd is None:
        fd = os.open("/dev/null", os.O_RDONLY)
    else:
        try:
            write_all(fd, data)
        except OSError:
            pass
        os.lseek(fd, 0, os.SEEK_SET)
    os.dup2(fd, 0)
    os.close(fd)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8", errors="replace")
    sys.__stdin__ = sys.stdin


def remember_source(filename, source):
    """Tracebacks show the lines of any call's code, also of a function an earlier call defined."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    calls = [k for k in linecache.cache if isinstance(k, str) and k.startswith(CALL_PREFIX)]
    if len(calls) > LINECACHE_CALLS:
        for k in sorted(calls, key=call_number)[:len(calls) - LINECACHE_CALLS]:
            linecache.cache.pop(k, None)


def call_number(filename):
    try:
        return int(filename[len(CALL_PREFIX):-1])
    except ValueError:
        return 0


def is_call_file(filename):
    return isinstance(filename, str) and filename.startswith(CALL_PREFIX)


def user_tb(tb):
    """The traceback from the first frame of a call's code: the interpreter's own frames go."""
    while tb is not None and not is_call_file(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    return tb


def last_user_line(tb):
    line = None
    while tb is not None:
        if is_call_file(tb.tb_frame.f_code.co_filename):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def without_runner_frames(te):
    """The interpreter's own frames (the SIGINT handler, the display) leave every traceback of the chain."""
    seen = set()
    while te is not None and id(te) not in seen:
        seen.add(id(te))
        te.stack = traceback.StackSummary.from_list([f for f in te.stack if not f.filename.startswith(RUNNER_DIR)])
        without_runner_frames(te.__cause__)
        te = te.__context__


def describe(e):
    """The code's exception: printed on stderr as Python would, and as the report's error."""
    tb = user_tb(e.__traceback__)
    te = traceback.TracebackException(type(e), e, tb, compact=True)
    without_runner_frames(te)
    text = clip("".join(te.format()), TRACEBACK_LIMIT)
    try:
        sys.stderr.write(text)
    except BaseException:
        pass
    return {"type": exception_type_name(type(e)), "message": clip(safe_str(e), MESSAGE_LIMIT),
            "line": last_user_line(tb), "traceback": text}


def run_call(ns, call):
    """Runs one call's code in the live namespace; its end as a dict (exit code, error, outputs)."""
    body = marshal.loads(call["body"])
    last = marshal.loads(call["last"]) if call["last"] is not None else None
    error, exit_code, outputs, shown, dropped = None, 0, [], [], 0
    try:
        set_stdin(call["stdin"])
        remember_source(call["filename"], call["source"])
        # plt.show() keeps what it draws within this call's caps until capture_figures takes it.
        rich.configure(call["maxOutputs"], call["maxOutputBytes"])
    except BaseException as e:
        return {"exitCode": 1, "error": {"type": "InternalError", "message": "the call could not be set up: " + safe_str(e),
                                         "line": None, "traceback": None}, "outputs": [], "outputsDropped": 0}
    # Each call may be interrupted, whatever an earlier call did to SIGINT.
    try:
        signal.signal(signal.SIGINT, on_sigint)
    except (ValueError, OSError):
        pass
    _user[0] = True
    try:
        try:
            try:
                exec(body, ns)
                if last is not None:
                    value = eval(last, ns)
                    if value is not None:
                        ns["_"] = value
                        shown, d = rich.display_outputs(value, call["maxOutputBytes"])
                        dropped += d
            except SystemExit as e:
                exit_code = exit_code_of(e.code, sys.stderr.write)
            except BaseException as e:
                error, exit_code = describe(e), 1
            room = max(0, call["maxOutputs"] - len(shown))
            figures, d = rich.capture_figures(room, call["maxOutputBytes"])
            dropped += d
            outputs = list(figures) + list(shown)
        finally:
            _user[0] = False
    except BaseException as e:  # interrupted while the error was being reported, or the capture failed
        if error is None:
            try:
                error, exit_code = describe(e), 1
            except BaseException:
                error, exit_code = {"type": "KeyboardInterrupt", "message": "", "line": None, "traceback": None}, 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    return {"exitCode": exit_code, "error": error, "outputs": outputs, "outputsDropped": dropped}
