"""pybox's trusted runner: the only code of ours that runs inside a sandbox.

Protocol (one execution per container, see src/engine/protocol.ts for the host's half):

  in  (stdin):  one tar archive. `.pybox/request.json` (args, env, context, caps) and optionally
                `.pybox/stdin` are read into memory; `main.py` and input files go to /work.
  out (stdout): frames of [1 byte kind][4 bytes big-endian length][payload]:
                1 = the user's stdout, 2 = the user's stderr, 3 = the final report (JSON), last;
                4 = ready (empty), first: the runner waits for its payload. A warm pool starts
                sandboxes ahead of demand; PYBOX_PRELOAD (set by the host, never by a request)
                names modules to import while waiting, so the user's `import numpy` is free.
  stderr:       the runner's own diagnostics only (never the user's output).

The user's code runs in a forked child with its own pipes. The runner marks itself non-dumpable so
the child cannot open the runner's descriptors through /proc, relays and counts output, and once the
child has exited it SIGKILLs every process left in the container, so the output is complete (no
daemonised grandchild can hold a pipe open) before the report is written.

Everything here is on the trusted side, but the host still treats every byte it sends as hostile:
the user's code can forge frames if it finds a way onto our stdout. It could only lie about its own
run; every limit that matters (time, memory, output size) is enforced by the host and the kernel.
"""

import ast
import atexit
import base64
import ctypes
import io
import json
import marshal
import os
import pickle
import selectors
import signal
import stat
import sys
import tarfile
import tempfile
import threading  # imported here, not at exit: a program that used up its descriptors cannot import
import traceback
import types

WORK = "/work"
OUT_DIR = os.path.join(WORK, "out")
MPL_CACHE_SRC = "/opt/pybox/mpl-cache"
KIND_STDOUT, KIND_STDERR, KIND_REPORT, KIND_READY = 1, 2, 3, 4
CHUNK = 65536
SOURCE_WINDOW = 240  # characters of a long source line shown around a syntax error
MESSAGE_LIMIT = 8192  # characters of an exception message kept in the report
TRACEBACK_LIMIT = 32768  # characters of a traceback kept in the report
PR_SET_DUMPABLE = 4
# Environment every run starts from; the request's env is laid over it. Nothing else is inherited.
BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "MPLBACKEND": "Agg",
    "MPLCONFIGDIR": "/tmp/.matplotlib",
}


def set_dumpable(on):
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 1 if on else 0, 0, 0, 0)
    except Exception:
        pass


def write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def frame(kind, payload):
    write_all(1, bytes([kind]) + len(payload).to_bytes(4, "big") + payload)


def frames(kind, payload):
    """Output in frames of at most CHUNK bytes: the host refuses larger output frames."""
    for start in range(0, len(payload), CHUNK):
        frame(kind, payload[start:start + CHUNK])


def clip(text, limit):
    """Head and tail of a long text, so a report stays small whatever the code raised."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + "\n... [%d characters cut] ...\n" % (len(text) - 2 * half) + text[-half:]


def report(data, code):
    frame(KIND_REPORT, json.dumps(data, ensure_ascii=True, separators=(",", ":")).encode())
    sys.exit(code)


def safe_member_path(name):
    """A relative path below /work, or None. The host already checked; checking again is cheap."""
    if not name or "\x00" in name or name.startswith("/") or "\\" in name:
        return None
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts) or len(parts) > 16:
        return None
    return os.path.join(WORK, *parts)


def read_payload():
    request, stdin_data = None, b""
    # Unbuffered: a buffered reader would block for a full 10 KiB record past the archive's end,
    # until the host closed stdin. Reading only what has arrived keeps a waiting sandbox usable.
    stdin = io.FileIO(0, "rb", closefd=False)
    with tarfile.open(fileobj=stdin, mode="r|") as tar:
        for member in tar:
            if not member.isreg():
                continue  # directories are implied; links and devices are never created
            src = tar.extractfile(member)
            if member.name == ".pybox/request.json":
                request = json.loads(src.read())
            elif member.name == ".pybox/stdin":
                stdin_data = src.read()
            else:
                target = safe_member_path(member.name)
                if target is None:
                    continue
                os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                with os.fdopen(fd, "wb") as f:
                    while True:
                        block = src.read(CHUNK)
                        if not block:
                            break
                        f.write(block)
    if request is None:
        raise ValueError("payload has no request")
    return request, stdin_data


def syntax_error_info(err):
    line = err.lineno or None
    text = (err.text or "").rstrip("\n")
    col = err.offset or None
    caret = None
    if len(text) > SOURCE_WINDOW:
        # A very long line: show the part around the error, and keep the caret under it.
        start = max(0, min((col or 1) - 1 - SOURCE_WINDOW // 2, len(text) - SOURCE_WINDOW))
        text = text[start:start + SOURCE_WINDOW]
        col = (col - start) if col else None
    if text and col:
        # offset counts characters from 1; keep the line's own indentation (tabs included).
        stripped = text.lstrip()
        indent = len(text) - len(stripped)
        pad = "".join(ch if ch == "\t" else " " for ch in text[: max(col - 1, 0)])
        caret = pad + "^"
        text_out, caret_out = text, caret
        if indent:
            text_out, caret_out = stripped, caret[indent:]
        text, caret = text_out, caret_out
    return {
        "type": type(err).__name__,
        "message": err.msg or str(err),
        "line": line,
        "column": col,
        "text": text or None,
        "caret": caret,
    }


def user_frames(tb):
    """Drop the runner's own frames from the top of a traceback."""
    while tb is not None and tb.tb_frame.f_code.co_filename != "main.py":
        tb = tb.tb_next
    return tb


def last_user_line(tb):
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "main.py":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def run_child(code, request, stdin_fd, out_w, err_w, res_w):
    """In the forked child: become the user's program and never return."""
    set_dumpable(True)
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")  # when memory runs out, the kernel picks the user's code, not the runner
    except OSError:
        pass
    os.setsid()
    os.dup2(stdin_fd, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    for fd in (stdin_fd, out_w, err_w):
        if fd > 2:
            os.close(fd)
    os.chdir(WORK)

    env = dict(BASE_ENV)
    env.update(request.get("env") or {})
    os.environ.clear()
    os.environ.update(env)
    sys.argv = ["main.py"] + list(request.get("args") or [])
    sys.path.insert(0, WORK)

    # Unbuffered text streams, as `python -u` gives: output written before a kill is not lost.
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8", errors="replace")
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8",
                                  errors="backslashreplace", write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                                  errors="backslashreplace", write_through=True)
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr

    main = types.ModuleType("__main__")
    main.__dict__.update({"__file__": os.path.join(WORK, "main.py"), "__builtins__": __builtins__,
                          "__cached__": None, "__spec__": None, "__package__": None})
    for name, value in (request.get("context") or {}).items():
        main.__dict__[name] = value
    sys.modules["__main__"] = main

    exit_code, error = 0, None
    try:
        exec(code, main.__dict__)
    except SystemExit as e:
        exit_code = system_exit_code(e)
    except BaseException as e:  # the user's exception: reported as data, printed as Python would
        tb = user_frames(e.__traceback__)
        # Clipped even on stderr: a huge message would otherwise turn an ordinary exception into an
        # output flood, and hide the error a model needs to read.
        text = clip("".join(traceback.format_exception(type(e), e, tb)), TRACEBACK_LIMIT)
        sys.stderr.write(text)
        kind = type(e)
        error = {
            "type": kind.__name__ if kind.__module__ == "builtins" else kind.__module__ + "." + kind.__qualname__,
            "message": clip(safe_str(e), MESSAGE_LIMIT),
            "line": last_user_line(tb),
            "traceback": text,
        }
        exit_code = 1
    exit_code = finish_interpreter(exit_code)
    if error is not None:
        try:
            write_all(res_w, json.dumps(error, ensure_ascii=True).encode())
        except OSError:
            pass
    os._exit(exit_code)


IMPORT_POLICY_MAX_FLAGGED = 100  # imports named in a report


def module_matches(name, entries):
    """An entry covers itself and its submodules: http.client covers http.client.x."""
    return any(name == e or name.startswith(e + ".") for e in entries)


def flagged_imports(source, policy):
    """Imports of the code that the import policy flags, from its syntax tree, in source order.

    Hygiene for models, not a boundary: the container is the boundary, and code can always reach a
    module by other means. Seen: `import m`, `from m import x` (as m.x), and `__import__("m")` or
    `importlib.import_module("m")` with a literal name. A safe entry wins over a dangerous one."""
    dangerous = [str(m) for m in policy.get("dangerous") or []]
    safe = [str(m) for m in policy.get("safe") or []]
    try:
        tree = ast.parse(source, "main.py")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    found, seen = [], set()

    def check(name, shown, node):
        if module_matches(name, dangerous) and not module_matches(name, safe) and (shown, node.lineno) not in seen:
            seen.add((shown, node.lineno))
            found.append({"module": shown[:200], "line": node.lineno, "column": node.col_offset + 1})

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                check(alias.name, alias.name, node)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                name = node.module if alias.name == "*" else node.module + "." + alias.name
                check(name, node.module if module_matches(node.module, dangerous) else name, node)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            f = node.func
            if (isinstance(f, ast.Name) and f.id == "__import__") or (isinstance(f, ast.Attribute) and f.attr == "import_module"):
                check(node.args[0].value, node.args[0].value, node)
    found.sort(key=lambda f: (f["line"], f["column"]))
    return found[:IMPORT_POLICY_MAX_FLAGGED]


def apply_import_policy(source, policy):
    """warn: the flagged imports, for the report. block: a validation failure naming them."""
    if not policy or policy.get("mode") not in ("warn", "block"):
        return []
    found = flagged_imports(source, policy)
    if not found or policy["mode"] == "warn":
        return [{"module": f["module"], "line": f["line"]} for f in found]
    first = found[0]
    message = "this server's import policy blocks " + ", ".join(
        "%s (line %d)" % (f["module"], f["line"]) for f in found)
    lines = source.decode("utf-8", "replace").splitlines()
    text = lines[first["line"] - 1] if first["line"] <= len(lines) else ""
    info = syntax_error_info(SyntaxError(message, ("main.py", first["line"], first["column"], text)))
    info["type"] = "ImportPolicyError"
    shown = '  File "main.py", line %s\n    %s\n    %s\n%s: %s\n' % (
        info["line"], info["text"] or "", info["caret"] or "", info["type"], info["message"])
    frames(KIND_STDERR, clip(shown, TRACEBACK_LIMIT).encode("utf-8", "backslashreplace"))
    report({"v": 1, "phase": "validation", "error": info}, 1)


def safe_str(e):
    try:
        return str(e)
    except BaseException:
        return "<exception str() failed>"


def system_exit_code(e):
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(str(code) + "\n")
    except BaseException:
        pass
    return 1


def finish_interpreter(exit_code):
    """What the interpreter does on exit: join non-daemon threads, run atexit, flush streams."""
    try:
        threading._shutdown()
    except BaseException:
        pass
    try:
        atexit._run_exitfuncs()
    except SystemExit as e:
        exit_code = system_exit_code(e)
    except BaseException:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    return exit_code


def collect_out_files(max_count, max_bytes):
    files, dropped, total = [], 0, 0
    if not os.path.isdir(OUT_DIR) or os.path.islink(OUT_DIR):
        return files, dropped
    for root, dirs, names in os.walk(OUT_DIR, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(root, name)
            rel = os.path.relpath(full, OUT_DIR)
            try:
                st = os.lstat(full)
            except OSError:
                dropped += 1
                continue
            ok_name = rel.isprintable() and len(rel.encode("utf-8", "surrogateescape")) <= 255 * 4
            if not stat.S_ISREG(st.st_mode) or not ok_name or len(files) >= max_count \
                    or total + st.st_size > max_bytes:
                dropped += 1
                continue
            try:
                fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW)
                with os.fdopen(fd, "rb") as f:
                    data = f.read(max_bytes - total + 1)
            except OSError:
                dropped += 1
                continue
            if total + len(data) > max_bytes:
                dropped += 1
                continue
            total += len(data)
            files.append({"path": rel, "size": len(data), "base64": base64.b64encode(data).decode()})
    return files, dropped


def relay(pid, out_r, err_r, res_r, flood_bytes):
    """Forward the child's output as frames until it has exited and every writer is gone."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)

    sel = selectors.DefaultSelector()
    sel.register(out_r, selectors.EVENT_READ, KIND_STDOUT)
    sel.register(err_r, selectors.EVENT_READ, KIND_STDERR)
    sel.register(res_r, selectors.EVENT_READ, 0)
    sel.register(wake_r, selectors.EVENT_READ, -1)
    counts = {KIND_STDOUT: 0, KIND_STDERR: 0}
    error_json, status, flooded, cpu_ms = b"", None, False, None
    open_fds = {out_r, err_r, res_r}

    def reap():
        nonlocal status, cpu_ms
        if status is None:
            done, st, usage = os.wait4(pid, os.WNOHANG)
            if done and os.WIFSTOPPED(st):
                release_tracee(pid, st)  # not an exit: the code made us its tracer
            elif done:
                status = st
                cpu_ms = round((usage.ru_utime + usage.ru_stime) * 1000, 1)
                # The user's program is over: nothing it started may outlive it or hold our pipes.
                try:
                    os.kill(-1, signal.SIGKILL)
                except OSError:
                    pass

    while open_fds:
        for key, _ in sel.select(timeout=0.5):
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
            if kind == 0:
                if len(error_json) < 1 << 20:
                    error_json += data
                continue
            counts[kind] += len(data)
            if counts[kind] > flood_bytes:
                if not flooded:
                    flooded = True
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except OSError:
                        pass
                    try:
                        os.kill(-1, signal.SIGKILL)
                    except OSError:
                        pass
                continue
            frame(kind, data)
        reap()
    while status is None:
        _, st, usage = os.wait4(pid, 0)
        if os.WIFSTOPPED(st):
            release_tracee(pid, st)
            continue
        status = st
        cpu_ms = round((usage.ru_utime + usage.ru_stime) * 1000, 1)
    return status, error_json, flooded, cpu_ms


def release_tracee(pid, st):
    """The code called ptrace(PTRACE_TRACEME), making the runner its tracer, and stopped on a signal
    (possible under gVisor; pybox's seccomp profile refuses ptrace under runc). Detach and pass the
    signal on, so the code runs as if untraced; if that fails, end it: it is never left stopped."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.ptrace(17, pid, None, ctypes.c_void_p(os.WSTOPSIG(st))) == 0:  # PTRACE_DETACH
            return
    except Exception:
        pass
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def seed_matplotlib_cache():
    """matplotlib wants a writable cache dir; a copy of the image's prebuilt one spares every run
    the font scan (seconds). Done while waiting, so no run pays for it."""
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


def preload():
    for name in filter(None, os.environ.get("PYBOX_PRELOAD", "").split(",")):
        try:
            __import__(name.strip())
        except Exception:
            pass  # a module that fails here fails again, visibly, when the user imports it


def prefork():
    """Forks the user's process now, while the sandbox waits: forking is the slowest step of a run
    under gVisor (~15 ms), and here nobody waits for it. The child blocks until the job arrives on
    the control pipe; EOF instead (a payload that never runs) makes it exit quietly."""
    ctl_r, ctl_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    res_r, res_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            for fd in (ctl_w, out_r, err_r, res_r):
                os.close(fd)
            chunks = []
            while True:
                chunk = os.read(ctl_r, CHUNK)
                if not chunk:
                    break
                chunks.append(chunk)
            os.close(ctl_r)
            if not chunks:
                os._exit(0)
            request, code_bytes, stdin_data = pickle.loads(b"".join(chunks))
            # stdin for the user's program: an unlinked file in /tmp, read at any pace.
            stdin_fd, stdin_path = tempfile.mkstemp(prefix=".pybox-stdin-", dir="/tmp")
            os.unlink(stdin_path)
            write_all(stdin_fd, stdin_data)
            os.lseek(stdin_fd, 0, os.SEEK_SET)
            run_child(marshal.loads(code_bytes), request, stdin_fd, out_w, err_w, res_w)
        finally:
            os._exit(70)
    for fd in (ctl_r, out_w, err_w, res_w):
        os.close(fd)
    return pid, ctl_w, out_r, err_r, res_r


def main():
    set_dumpable(False)
    seed_matplotlib_cache()
    preload()
    pid, ctl_w, out_r, err_r, res_r = prefork()
    frame(KIND_READY, b"")
    try:
        request, stdin_data = read_payload()
        with open(os.path.join(WORK, "main.py"), "rb") as f:
            source = f.read()
    except Exception as e:
        report({"v": 1, "phase": "setup", "message": "bad payload: %s" % safe_str(e)}, 70)

    try:
        code = compile(source, "main.py", "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as e:
        if isinstance(e, SyntaxError):
            info = syntax_error_info(e)
            shown = '  File "main.py", line %s\n    %s\n    %s\n%s: %s\n' % (
                info["line"], info["text"] or "", info["caret"] or "", info["type"], info["message"])
        else:  # e.g. source code containing a NUL byte
            info = {"type": type(e).__name__, "message": safe_str(e), "line": None, "column": None,
                    "text": None, "caret": None}
            shown = "%s: %s\n" % (info["type"], info["message"])
        frames(KIND_STDERR, clip(shown, TRACEBACK_LIMIT).encode("utf-8", "backslashreplace"))
        report({"v": 1, "phase": "validation", "error": info}, 1)
    flagged = apply_import_policy(source, request.get("importPolicy"))

    # The job goes to the waiting child; closing the pipe tells it the job is complete. (On every
    # early exit above, our descriptors close with us and the child exits on EOF.)
    write_all(ctl_w, pickle.dumps((request, marshal.dumps(code), stdin_data)))
    os.close(ctl_w)

    caps = request.get("caps") or {}
    status, error_json, flooded, cpu_ms = relay(pid, out_r, err_r, res_r, int(caps.get("floodBytes", 1 << 20)))
    exit_code = os.waitstatus_to_exitcode(status)
    signum = -exit_code if exit_code < 0 else None
    error = None
    if error_json:
        try:
            error = json.loads(error_json)
        except ValueError:
            error = None
    files, dropped = collect_out_files(int(caps.get("maxFiles", 0)), int(caps.get("maxFileBytes", 0)))
    result = {
        "v": 1,
        "phase": "run",
        "exitCode": exit_code if signum is None else 128 + signum,
        "signal": signum,
        "error": error,
        "files": files,
        "filesDropped": dropped,
        "flooded": flooded,
        "cpuMs": cpu_ms,
        "flaggedImports": flagged,
    }
    report(result, result["exitCode"] if result["exitCode"] < 256 else 1)


if __name__ == "__main__":
    main()
