"""What the forked child does: preload while it waits, then become the user's program.

The child is forked before anything heavy is imported (under gVisor forking a process that holds
numpy and pandas costs ~60 ms, importing them in the waiting child costs the run nothing). It talks
to the runner over its result pipe, one byte at a time before the code runs:

  b"P"            preloading is over: the runner may announce that the sandbox is ready;
  b"F" + message  setting up the run failed before any of the code ran (runner's fault, not the code's);
  b"S"            the code starts now; whatever follows (the code's error as JSON) belongs to the run.

Everything after b"S" may come from the code itself (it inherits the pipe), so the runner trusts
it no more than the code's own output."""

import atexit
import ctypes
import io
import json
import marshal
import os
import pickle
import resource
import signal
import sys
import tempfile
import threading  # imported now: a program that used up its descriptors cannot import at exit
import time
import traceback
import types

from . import prefault, rich
from .payload import case_blob, safe_member_path, write_new_file
from .protocol import CHUNK, write_all
from .text import MESSAGE_LIMIT, TRACEBACK_LIMIT, clip, exception_type_name, exit_code_of, last_user_line, safe_str, user_frames

WORK = "/work"
MPL_CACHE_SRC = "/opt/pybox/mpl-cache"
SETUP_MESSAGE_LIMIT = 2000
# On the result pipe, after the code's error (JSON, ASCII: never a NUL): the program's exit code and
# CPU time. The code can write it too; it could only end its own run early with it.
EXIT_MARK = b"\x00EXIT "
# Before the exit mark, after the code's error: the run's rich outputs (figures) as JSON,
# {"outputs": [...], "dropped": n}. The code can write it too: it could only spoil its own figures.
OUTPUTS_MARK = b"\x00OUTPUTS "
# Environment every run starts from; the request's env is laid over it. Nothing else is inherited.
BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    # Agg, but plt.show() and the figures left open come back in the result (mpl_backend.py).
    "MPLBACKEND": "module://pybox_runner.mpl_backend",
    "MPLCONFIGDIR": "/tmp/.matplotlib",
}
PR_SET_DUMPABLE = 4
CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
PR_CAPBSET_DROP = 24
CAP_LAST = 63
LINUX_CAPABILITY_VERSION_3 = 0x20080522


class SetupError(Exception):
    """A failure of ours before the code runs."""


def set_dumpable(on):
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 1 if on else 0, 0, 0, 0)
    except Exception:
        pass


def drop_capabilities():
    """In a user namespace of its own (gVisor) the child holds every capability of that namespace:
    the code gets none of them. Raises when they cannot be dropped: the code must not run with them."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in range(CAP_LAST + 1):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the kernel's last capability

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    header, data = Header(LINUX_CAPABILITY_VERSION_3, 0), (Data * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def private_proc():
    """The code's process under gVisor (a single run's and every test case's): a mount namespace of
    its own with a /proc of its own PID namespace. gVisor's /proc ignores non-dumpable, so through
    the container's /proc the code could open the runner's descriptors (its stdout, the frame
    channel to the host, where it could forge its own report; with test cases the store with every
    case's input) and those of the process waiting for the next case; in its own /proc there is only
    its own PID namespace, where PID 1 is itself. Raises when that cannot be done: no code runs
    without it."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS) failed")
    if libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None) != 0:
        raise OSError(ctypes.get_errno(), "mounting a private /proc failed")


def seed_matplotlib_cache():
    """A copy of the image's prebuilt font cache spares every run matplotlib's font scan (seconds)."""
    target = BASE_ENV["MPLCONFIGDIR"]
    if not os.path.isdir(MPL_CACHE_SRC):
        return
    try:
        os.makedirs(target, exist_ok=True)
        for name in os.listdir(MPL_CACHE_SRC):
            with open(os.path.join(MPL_CACHE_SRC, name), "rb") as s, open(os.path.join(target, name), "wb") as d:
                d.write(s.read())
    except OSError:
        pass


# Run once after a module is preloaded, so a model's usual first steps with it find their code
# paths warm: under gVisor the first use of a code path in a process costs page faults and, for
# what pandas imports only when first needed, file reads (together ~10 ms of a small DataFrame
# snippet). In a namespace of its own that goes with it; it prints nothing, draws no random numbers
# and touches no file.
WARMUPS = {
    "pandas": "\n".join((
        "import numpy as np, pandas as pd",
        "df = pd.DataFrame({'k': np.arange(12) % 3, 'x': np.arange(12, dtype=float), 's': list('abcdefghijkl')})",
        "g = df.groupby('k')['x'].agg(['mean', 'sum']).round(1)",
        "m = df.merge(g, left_on='k', right_index=True).sort_values('x', ascending=False)",
        "text = repr(df) + str(m.head()) + df.describe().to_string() + str(g.to_dict()) + str(df['x'].mean())",
        "text += df.to_csv(index=False) + str(df.dtypes) + str(np.arange(6).reshape(2, 3) @ np.ones(3))",
    )),
}


def preload(names):
    for name in names:
        try:
            __import__(name)
        except Exception:
            continue  # a module that fails here fails again, visibly, when the user imports it
        warm(name)


def warm(name):
    source = WARMUPS.get(name)
    if source is None:
        return
    try:
        exec(compile(source, "<pybox warm-up>", "exec", dont_inherit=True), {"__name__": "__pybox_warmup__"})
    except Exception:
        pass  # the warm-up is only ever a head start


def preload_names(value):
    return [n.strip() for n in (value or "").split(",") if n.strip()]


def build_env(request):
    """The code's environment. Every key and value must survive the trip to the C environment:
    one that cannot (a lone surrogate) is a setup failure naming it, not the code's."""
    env = dict(BASE_ENV)
    extra = request.get("env") or {}
    if not isinstance(extra, dict):
        raise SetupError("env is not an object")
    for key, value in extra.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise SetupError("env %r is not a string" % (key,))
        for what, text in (("name", key), ("value", value)):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                raise SetupError("the env %s of %s cannot be passed to a process: %s" % (what, ascii(key), e))
        if not key or "=" in key or "\x00" in key or "\x00" in value:
            raise SetupError("env %s cannot be passed to a process" % ascii(key))
        env[key] = value
    return env


def wait_for_job(ctl_r):
    chunks = []
    while True:
        chunk = os.read(ctl_r, CHUNK)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(ctl_r)
    return b"".join(chunks)


def child_main(ctl_r, out_w, err_w, res_w, names, isolated, store_fd, seed_late=False):
    """In the forked child: never returns. seed_late: copy matplotlib's cache only once the job
    came (a test case's process is forked before /tmp is emptied for it)."""
    try:
        # Python's own SIGINT behaviour (KeyboardInterrupt) for the code; the runner has none.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # The container's stdin and stdout are the runner's alone: never read nor written from here.
        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)
        # Nothing else of the runner's: a test case's process is forked while the case before it
        # runs, and must not hold that case's pipes.
        close_other_fds((ctl_r, out_w, err_w, res_w, store_fd))
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")  # when memory runs out, the kernel picks the user's code, not the runner
        except OSError:
            pass
        if isolated:
            # While the capabilities of its user namespace are still held: mounting needs them.
            try:
                private_proc()
            except OSError as e:
                fail_setup(res_w, "no /proc of its own: %s" % safe_str(e))
            drop_capabilities()
        if not seed_late:
            set_dumpable(True)
            seed_matplotlib_cache()
        if names and isolated:
            # A warm gVisor sandbox: the pages shared with the runner, before preloading adds its own.
            prefault.populate()
        preload(names)
        # What does not depend on the job is done while waiting for it.
        try:
            prepare_process(out_w, err_w)
        except OSError as e:
            fail_setup(res_w, "preparing the code's process failed: %s" % safe_str(e))
        write_all(res_w, b"P")
        job = wait_for_job(ctl_r)
        if not job:
            os._exit(0)  # the payload never came: nothing to run
        if seed_late:
            # A test case's process waits while the case before it runs: until its own job comes
            # it stays non-dumpable, so nothing of that case can open its memory through /proc.
            set_dumpable(True)
            seed_matplotlib_cache()
        try:
            request, code_bytes, stdin_data = pickle.loads(job)
            if "case" in request:
                request, stdin_data = take_case(request, store_fd)
            os.close(store_fd)  # the code never holds the store (other cases' input is in it)
            setup_run(request, stdin_data)
            code = marshal.loads(code_bytes)
            main = make_main(request)
            caps = rich_caps(request)
            rich.configure(*(caps or (0, 0)))
        except SetupError as e:
            fail_setup(res_w, str(e))
        except BaseException as e:
            fail_setup(res_w, "%s: %s" % (type(e).__name__, safe_str(e)))
        write_all(res_w, b"S")
        run_code(code, main, res_w, caps)
    finally:
        os._exit(70)


def take_case(request, store_fd):
    """This test case's own input from the store: its files laid over the execution's in /work
    (a case's file wins), its args; (the request to run with, stdin bytes)."""
    try:
        args, stdin_data, files = case_blob(store_fd, request["case"])
    except (ValueError, KeyError, TypeError) as e:
        raise SetupError("a test case's input cannot be read: %s" % e)
    for path, data in files:
        target = safe_member_path(WORK, path)
        if target is None or path == "main.py":
            continue
        try:
            if os.path.lexists(target) and not os.path.isdir(target):
                os.unlink(target)
            write_new_file(target, data)
        except OSError:
            pass  # a directory where the file would go: the execution's stays, as in a plain run
    return dict(request, args=args), stdin_data


def close_other_fds(keep):
    """Closes every descriptor from 3 up but those in keep."""
    low = 3
    for fd in sorted(set(keep)) + [None]:
        if fd is None:
            os.closerange(low, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
            break
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1


def fail_setup(res_w, message):
    try:
        write_all(res_w, b"F" + json.dumps(clip(message, SETUP_MESSAGE_LIMIT), ensure_ascii=True).encode())
    finally:
        os._exit(70)


def memory_file(name):
    """A file with no name anywhere (no code can find it by name: the next test case's stdin, the
    store of every case's input), or an unlinked one in /tmp where memfd_create is missing."""
    try:
        return os.memfd_create(name, 0)
    except (AttributeError, OSError):
        fd, path = tempfile.mkstemp(prefix="." + name + "-", dir="/tmp")
        os.unlink(path)
        return fd


def prepare_process(out_w, err_w):
    """The code's process as far as it does not depend on the job, done while it waits (under gVisor
    each step costs the run a fraction of a millisecond): stdin a memory file the job fills, /work
    its directory, a session of its own, the output pipes as 1 and 2, behind unbuffered text
    streams as `python -u` gives, so output written before a kill is not lost."""
    stdin_fd = memory_file("pybox-stdin")
    os.chdir(WORK)
    os.setsid()
    os.dup2(stdin_fd, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    for fd in (stdin_fd, out_w, err_w):
        if fd > 2:
            os.close(fd)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8", errors="replace")
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8",
                                  errors="backslashreplace", write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                                  errors="backslashreplace", write_through=True)
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr


def setup_run(request, stdin_data):
    """The job's part of the code's process: its stdin, environment and arguments."""
    env = build_env(request)
    args = request.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise SetupError("args is not a list of strings")
    context = request.get("context") or {}
    if not isinstance(context, dict):
        raise SetupError("context is not an object")
    if stdin_data:
        write_all(0, stdin_data)
        os.lseek(0, 0, os.SEEK_SET)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = ["main.py"] + list(args)
    sys.path.insert(0, WORK)


def make_main(request):
    main = types.ModuleType("__main__")
    main.__dict__.update({"__file__": os.path.join(WORK, "main.py"), "__builtins__": __builtins__,
                          "__cached__": None, "__spec__": None, "__package__": None})
    for name, value in (request.get("context") or {}).items():
        main.__dict__[name] = value
    sys.modules["__main__"] = main
    return main


def rich_caps(request):
    """(most figures, most bytes of one) a single run returns; None for a test case's run, which
    returns none."""
    return None if "case" in request else rich.caps_of(request.get("caps"))


def rich_section(caps):
    """The figures of the run, for the result pipe (OUTPUTS_MARK + JSON), or b"" when there are none."""
    if caps is None:
        return b""
    try:
        outputs, dropped = rich.capture_figures(*caps)
        if not outputs and not dropped:
            return b""
        return OUTPUTS_MARK + json.dumps({"outputs": outputs, "dropped": dropped}, ensure_ascii=True).encode()
    except BaseException:
        return b""


# os._exit as the process had it: the runner's own exits do not go through said_exit.
REAL_EXIT = os._exit


def exit_mark(exit_code, started):
    """The exit mark (EXIT_MARK + [exit code, CPU ms, wall ms]): the program is over."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_ms = round((own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime) * 1000, 1)
    wall_ms = round((time.monotonic() - started) * 1000, 1)
    return EXIT_MARK + json.dumps([exit_code, cpu_ms, wall_ms]).encode() + b"\n"


def said_exit(res_w, started):
    """os._exit for the code: in the code's own process it first says its exit code on the result
    pipe, as a program that ends normally does, so the runner knows the code ended itself (not
    killed, not out of memory). Its forks (multiprocessing's children) exit without a word."""
    pid = os.getpid()

    def _exit(status):
        if os.getpid() == pid and isinstance(status, int):
            try:
                os.write(res_w, exit_mark(status & 0xFF, started))  # one write under PIPE_BUF: whole or nothing
            except BaseException:
                pass
        REAL_EXIT(status)

    return _exit


def run_code(code, main, res_w, caps=None):
    """caps: rich_caps(request), the caps of the figures returned."""
    exit_code, error = 0, None
    started = time.monotonic()
    os._exit = said_exit(res_w, started)
    try:
        exec(code, main.__dict__)
    except SystemExit as e:
        exit_code = exit_code_of(e.code, sys.stderr.write)
    except BaseException as e:  # the user's exception: reported as data, printed as Python would
        tb = user_frames(e.__traceback__)
        # Clipped even on stderr: a huge message would otherwise turn an ordinary exception into an
        # output flood, and hide the error a model needs to read.
        text = clip("".join(traceback.format_exception(type(e), e, tb)), TRACEBACK_LIMIT)
        sys.stderr.write(text)
        error = {
            "type": exception_type_name(type(e)),
            "message": clip(safe_str(e), MESSAGE_LIMIT),
            "line": last_user_line(tb),
            "traceback": text,
        }
        exit_code = 1
    if caps is not None:
        rich.keep_open_at_exit()
    exit_code = finish_interpreter(exit_code)
    # After atexit: a figure drawn there is the program's too. Its rendering is counted in the run's time.
    outputs = rich_section(caps)
    try:
        if error is not None:
            write_all(res_w, json.dumps(error, ensure_ascii=True).encode())
        if outputs:
            write_all(res_w, outputs)
        # The program is over: say so before the process frees its memory (a preloaded numpy and
        # pandas take milliseconds to tear down), so the runner need not wait for that.
        write_all(res_w, exit_mark(exit_code, started))
        for fd in (1, 2, res_w):
            os.close(fd)
    except BaseException:
        pass
    REAL_EXIT(exit_code)


def finish_interpreter(exit_code):
    """What the interpreter does on exit: join non-daemon threads, run atexit, flush streams."""
    try:
        threading._shutdown()
    except BaseException:
        pass
    try:
        atexit._run_exitfuncs()
    except SystemExit as e:
        exit_code = exit_code_of(e.code, sys.stderr.write)
    except BaseException:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    return exit_code
