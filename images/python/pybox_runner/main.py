"""pybox's trusted runner, PID 1 of the sandbox container.

Protocol (one execution per container; src/engine/protocol.ts has the host's half):

  With "session": true in the request the runner serves a live interpreter instead (session.py).

  in  (stdin):  one tar archive. `.pybox/request.json` (args, env, context, caps) and optionally
                `.pybox/stdin` are read into memory; `main.py` and input files go to /work.
                With `tests` in the request, each case's args, stdin and files come as entries of
                their own (`.pybox/cases/<i>/...`) and go to a memory file (run_tests, cases.py).
  out (stdout): frames (protocol.py). Ready first, once the code's process is forked and has
                imported what PYBOX_PRELOAD names (set by the host for warm sandboxes, never by a
                request); then the code's output (with tests: one case frame per case); the report last.
  stderr:       the runner's own diagnostics only (never the user's output).

The runner marks itself non-dumpable so the code cannot open its descriptors through /proc (runc;
under gVisor, whose /proc ignores that mark, the code's process has a /proc of its own instead), relays and counts output, reaps every process as init, and once the code's process has exited
SIGKILLs everything left, so the output is complete before the report is written.

Everything here is on the trusted side, but the host still treats every byte it sends as hostile:
the code can forge frames if it finds a way onto our stdout. It could only lie about its own run;
every limit that matters (time, memory, output size) is enforced by the host and the kernel."""

import ctypes
import io
import json
import marshal
import os
import pickle
import signal
import sys
import time

from . import child as child_mod
from . import prefault
from .cases import CaseError, CaseOutput, case_kind, case_report, fill_work, sweep, wipe, writable_places
from .memory import clamp_counts, memory_accounting, since
from .payload import collect_out_files, make_out_dir, read_cases, read_request, read_rest, store_read, test_count
from .policy import check_imports
from .protocol import KIND_CASE, KIND_READY, KIND_STDERR, encode_frame, encode_frames, encode_report, write_all
from .relay import RESULT_LIMIT, Relay, process_cpu_ms
from .rich import OUTPUT_TYPES, caps_of, wire_limit
from .session import serve_session
from .text import TRACEBACK_LIMIT, clip, compile_error_info, render_error_info, safe_str

WORK = child_mod.WORK
OUT_DIR = os.path.join(WORK, "out")
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWIPC = 0x08000000
SETUP_EXIT = 70


def emit(kind, payload):
    write_all(1, encode_frame(kind, payload))


def report(data, code):
    write_all(1, encode_report(data))
    sys.exit(code)


def setup_failure(message):
    report({"v": 1, "phase": "setup", "message": clip(message, 4000)}, SETUP_EXIT)


def isolate(again=False):
    """Where the kernel lets an unprivileged process make namespaces (gVisor), the code's process
    gets a PID namespace of its own: there the runner has no number the code could signal. (gVisor
    delivers signals to init from inside its namespace, as Linux does not.) Under runc pybox's
    seccomp profile refuses this, and Linux's own protection of init suffices."""
    libc = ctypes.CDLL(None, use_errno=True)
    if again:
        # Already in its own user namespace: a new PID namespace for the next child (the first
        # one died with its init), and a new IPC namespace (a test case's System V objects and
        # message queues stay with it).
        return libc.unshare(CLONE_NEWPID | CLONE_NEWIPC) == 0 or libc.unshare(CLONE_NEWPID) == 0
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWPID) != 0:
        return False
    # The same uid and gid inside, so the code sees who it is; setgroups stays as gVisor has it.
    for name, text in (("uid_map", "%d %d 1" % (uid, uid)), ("gid_map", "%d %d 1" % (gid, gid))):
        try:
            with open("/proc/self/" + name, "w") as f:
                f.write(text)
        except OSError as e:
            setup_failure("cannot map the sandbox user into its namespace (%s): %s" % (name, e))
    return True


class Child:
    """The code's process, forked ahead of its job."""

    def __init__(self, names, isolated, store_fd, seed_late=False):
        self.ctl_r, self.ctl_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        res_r, res_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            for fd in (self.ctl_w, out_r, err_r, res_r):
                os.close(fd)
            child_mod.child_main(self.ctl_r, out_w, err_w, res_w, names, isolated, store_fd, seed_late)
        os.close(self.ctl_r)
        for fd in (out_w, err_w, res_w):
            os.close(fd)
        self.out_r, self.err_r, self.res_r = out_r, err_r, res_r

    def wait_ready(self):
        """True once the child has preloaded; False if it died first (then it is reaped). A child
        that could not set itself up says why first (b"F" + message): that is a setup failure of
        the run, which no other child would get past."""
        got = b""
        while True:
            try:
                got = os.read(self.res_r, 1)
            except InterruptedError:
                continue
            break
        if got == b"P":
            return True
        if got == b"F":
            message, _ = parse_result(got + read_to_end(self.res_r, 16384))
            self.discard()
            setup_failure("setting up the code's process failed: %s" % message)
        self.discard()
        return False

    def close_pipes(self):
        """After its run: the relay has read the pipes to their end."""
        for fd in (self.out_r, self.err_r, self.res_r):
            try:
                os.close(fd)
            except OSError:
                pass

    def discard(self):
        for fd in (self.ctl_w, self.out_r, self.err_r, self.res_r):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def read_to_end(fd, limit):
    """At most limit bytes from fd, up to its end."""
    chunks, size = [], 0
    while size < limit:
        try:
            chunk = os.read(fd, limit - size)
        except InterruptedError:
            continue
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def start_child(names, isolated, store_fd):
    """A preloading child; if it dies while preloading (say, a memory limit too small for numpy), a
    lean one instead: a sandbox that cannot preload still runs code."""
    child = Child(names, isolated, store_fd)
    if names and isolated:
        prefault.populate()  # a warm gVisor sandbox: the runner's pages, while the child preloads
    if child.wait_ready():
        return child
    if names:
        sys.stderr.write("pybox runner: the preloading process died; starting a lean one\n")
        if isolated and not isolate(again=True):
            setup_failure("cannot make a PID namespace for the code's process")
        child = Child([], isolated, store_fd)
        if child.wait_ready():
            return child
    setup_failure("the process for the code could not be started")


def make_store():
    """A file in memory for test cases' input (payload.read_cases), made before any process is
    forked so that each inherits it; only a case's own process reads its part, and no process of
    the code ever holds it open."""
    return child_mod.memory_file("pybox-cases")


def load_cases(count, store_fd):
    """Reads the rest of a test-case archive in a process of its own, which exits before any case
    runs: the runner's memory, which every case's process inherits, never holds a case's input."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            index = read_cases(io.FileIO(0, "rb", closefd=False), count, store_fd)
            write_all(w, json.dumps(index).encode())
            code = 0
        except BaseException as e:
            write_all(w, ("!" + safe_str(e)).encode("utf-8", "replace"))
        finally:
            os._exit(code)
    os.close(w)
    data = child_mod.wait_for_job(r)
    _, status = os.waitpid(pid, 0)
    if status != 0 or data.startswith(b"!"):
        raise ValueError(data[1:].decode("utf-8", "replace") or "reading the test cases failed")
    return json.loads(data)


def parse_result(data):
    """(setup failure message or None, the code's error or None) from the child's result pipe."""
    if data.startswith(b"F"):
        try:
            message = json.loads(data[1:])
        except ValueError:
            message = None
        return (message if isinstance(message, str) else "setting up the run failed"), None
    if data.startswith(b"S") and len(data) > 1:
        body = data[1:]
        mark = body.find(child_mod.EXIT_MARK)
        if mark >= 0:
            body = body[:mark]
        outputs = body.rfind(child_mod.OUTPUTS_MARK)
        if outputs >= 0:
            body = body[:outputs]
        if not body:
            return None, None
        try:
            error = json.loads(body)
        except ValueError:
            return None, None
        return None, error if isinstance(error, dict) else None
    return None, None


def parse_outputs(data, max_count):
    """(outputs, dropped) from the child's result pipe: the figures it sent (child.rich_section),
    shaped as the report carries them. The code could have written them: the host checks them again."""
    body = data[1:] if data.startswith(b"S") else b""
    mark = body.find(child_mod.EXIT_MARK)
    if mark >= 0:
        body = body[:mark]
    start = body.rfind(child_mod.OUTPUTS_MARK)
    if start < 0:
        return [], 0
    try:
        section = json.loads(body[start + len(child_mod.OUTPUTS_MARK):])
        items, dropped = section["outputs"], section["dropped"]
    except (ValueError, TypeError, KeyError):
        return [], 0
    if not isinstance(items, list) or not isinstance(dropped, int) or isinstance(dropped, bool) or not 0 <= dropped < 1 << 31:
        return [], 0
    outputs = []
    for item in items:
        if (len(outputs) < max_count and isinstance(item, dict) and item.get("type") in OUTPUT_TYPES
                and isinstance(item.get("data"), str) and item.get("kind") in ("figure", "result")):
            outputs.append({"type": item["type"], "data": item["data"], "kind": item["kind"]})
        else:
            dropped += 1
    return outputs, dropped


def run_cpu_ms(total, before):
    """The run's own CPU time: what the code's process used, less its preloading before the job."""
    if total is None:
        return None
    return round(max(0.0, total - (before or 0.0)), 1)


def run_report(status, error, flagged, flooded, cpu_ms, files, dropped, memory, outputs=None, outputs_dropped=0, end_said=True):
    exit_code = os.waitstatus_to_exitcode(status)
    signum = -exit_code if exit_code < 0 else None
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
        "endSaid": bool(end_said),
    }
    if memory is not None:
        result["memory"] = memory
    if outputs or outputs_dropped:
        result["outputs"] = outputs or []
        result["outputsDropped"] = outputs_dropped
    return result


def main():
    # Python's SIGINT handler would make the runner interruptible by the code; as init with no
    # handler, nothing from inside the namespace can signal it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    isolated = isolate()  # while /proc/self is still ours to write (before the runner is non-dumpable)
    child_mod.set_dumpable(False)
    store_fd = make_store()
    child = start_child(child_mod.preload_names(os.environ.get("PYBOX_PRELOAD")), isolated, store_fd)
    memory_before = memory_accounting()  # read while waiting: only the run's own OOM kills count
    cpu_before = process_cpu_ms(child.pid)  # its preloading is not the code's CPU time
    emit(KIND_READY, b"")
    index, stdin_data = None, b""
    try:
        request = read_request(0)
        if request.get("session") is True:
            os.close(store_fd)
            serve_session(request, child, isolated)  # never returns
        count = test_count(request)
        if count:
            index = load_cases(count, store_fd)
            source = store_read(store_fd, index["main"])
        else:
            # Unbuffered: a buffered reader would block for a full 10 KiB record past the archive's
            # end, until the host closed stdin. Reading only what has arrived keeps a sandbox usable.
            stdin_data = read_rest(io.FileIO(0, "rb", closefd=False), WORK)
            with open(os.path.join(WORK, "main.py"), "rb") as f:
                source = f.read()
            make_out_dir(OUT_DIR)
    except Exception as e:
        setup_failure("bad payload: %s" % safe_str(e))

    try:
        code = compile(source, "main.py", "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as e:
        info = compile_error_info(e)
        shown = render_error_info(info, located=isinstance(e, SyntaxError))
        write_all(1, encode_frames(KIND_STDERR, clip(shown, TRACEBACK_LIMIT).encode("utf-8", "backslashreplace")))
        report({"v": 1, "phase": "validation", "error": info}, 1)
    flagged, blocked = check_imports(source, request.get("importPolicy"))
    if blocked is not None:
        shown = render_error_info(blocked)
        write_all(1, encode_frames(KIND_STDERR, clip(shown, TRACEBACK_LIMIT).encode("utf-8", "backslashreplace")))
        report({"v": 1, "phase": "validation", "error": blocked}, 1)

    if index is not None:
        run_tests(request, index, store_fd, source, marshal.dumps(code), child, isolated, flagged)

    # The job goes to the waiting child; closing the pipe tells it the job is complete. (On every
    # early exit above, our descriptors close with us and the child exits on EOF.)
    write_all(child.ctl_w, pickle.dumps((request, marshal.dumps(code), stdin_data)))
    os.close(child.ctl_w)

    caps = request.get("caps") or {}
    max_outputs, max_output_bytes = caps_of(caps)
    # Room on the result pipe for the figures the child may send within its caps.
    result_limit = RESULT_LIMIT + wire_limit(max_outputs, max_output_bytes) + 4096
    relay = Relay(child.pid, child.out_r, child.err_r, child.res_r, int(caps.get("floodBytes", 1 << 20)), emit,
                  result_limit=result_limit).run()
    failure, error = parse_result(relay.result)
    if failure is not None:
        setup_failure("setting up the run failed before the code started: " + failure)
    memory = clamp_counts(since(memory_before, memory_accounting()))
    files, dropped = collect_out_files(OUT_DIR, int(caps.get("maxFiles", 0)), int(caps.get("maxFileBytes", 0)))
    outputs, outputs_dropped = parse_outputs(relay.result, max_outputs)
    result = run_report(relay.status, error, flagged, relay.flooded, run_cpu_ms(relay.cpu_ms, cpu_before), files, dropped, memory,
                        outputs, outputs_dropped, relay.end_said)
    report(result, result["exitCode"] if result["exitCode"] < 256 else 1)


def case_timeout_s(case):
    value = case.get("timeoutMs") if isinstance(case, dict) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 86_400_000:
        setup_failure("a test case has no valid timeoutMs")
    return value / 1000.0


def case_child(isolated, store_fd):
    """A fresh process for a test case, waiting for its job (under gVisor in a PID namespace of its own)."""
    if isolated and not isolate(again=True):
        setup_failure("cannot make a PID namespace for a test case")
    child = Child([], isolated, store_fd, seed_late=True)
    if not child.wait_ready():
        setup_failure("the process for a test case could not be started")
    return child


def run_tests(request, index, store_fd, main_source, code_bytes, child, isolated, flagged):
    """Runs the compiled code once per test case, each as a fresh process in a fresh work
    directory (cases.py says how), and reports each as a KIND_CASE frame; then the final report.
    Under gVisor the process for the next case is forked while a case runs (a fork costs tens of
    ms there), in a PID and IPC namespace of its own: nothing of the running case can reach it."""
    tests = request.get("tests")
    caps = request.get("caps") or {}
    out_cap = int(caps.get("outputBytes", 1 << 20))
    flood = int(caps.get("floodBytes", 1 << 20))
    # Only what a case's program needs: the other cases' arguments stay here.
    base_job = {"env": request.get("env") or {}, "context": request.get("context") or {}}
    shared = [(path, store_read(store_fd, [offset, size])) for path, offset, size in index["files"]]
    places = writable_places()
    spare, total_cpu = None, 0.0
    for number, case in enumerate(tests):
        timeout_s = case_timeout_s(case)
        try:
            if number == 0 and isolated:
                # Under gVisor every case's process is one made for a case (child.private_proc), the
                # first too: the one forked ahead of the payload goes.
                child.discard()
                child = case_child(isolated, store_fd)
            if number > 0:
                # Nothing of the last case may see this one: its processes go, then its files.
                sweep({spare.pid} if spare is not None else set())
                wipe(places)
                child, spare = spare, None
                if child is not None and not child.wait_ready():
                    child = None
                if child is None:
                    child = case_child(isolated, store_fd)
            cpu_before = process_cpu_ms(child.pid)
            fill_work(WORK, main_source, shared)
        except (CaseError, OSError) as e:
            setup_failure("preparing test case %d failed: %s" % (number, safe_str(e)))
        # The case's own input (args, stdin, files) is read by its own process from the store.
        job = dict(base_job, case=index["cases"][number])
        memory_before = memory_accounting()
        write_all(child.ctl_w, pickle.dumps((job, code_bytes, b"")))
        os.close(child.ctl_w)
        started = time.monotonic()
        if isolated and number + 1 < len(tests) and isolate(again=True):
            spare = Child([], isolated, store_fd, seed_late=True)
        output = CaseOutput(out_cap)
        relay = Relay(child.pid, child.out_r, child.err_r, child.res_r, flood, output.emit,
                      deadline=started + timeout_s)
        if spare is not None:
            # kill(-1) would take the spare too: the case's PID namespace dies with its first process.
            relay.kill = lambda _group, r=relay, pid=child.pid: None if r.reaped else kill_quietly(pid)
        relay.run()
        elapsed_ms = (time.monotonic() - started) * 1000
        child.close_pipes()
        failure, error = parse_result(relay.result)
        if failure is not None and not relay.timed_out and not relay.flooded:
            setup_failure("setting up test case %d failed before the code started: %s" % (number, failure))
        kind = case_kind(relay.status, relay.timed_out, relay.flooded, memory_before, memory_accounting())
        duration_ms = relay.wall_ms if kind == "finished" and relay.wall_ms is not None else elapsed_ms
        cpu_ms = run_cpu_ms(relay.cpu_ms, cpu_before)
        total_cpu += cpu_ms or 0.0
        emit(KIND_CASE, json.dumps(case_report(number, kind, relay.status, error, duration_ms, cpu_ms, output, relay.counts),
                                   ensure_ascii=True, separators=(",", ":")).encode())
    try:
        sweep(set())
    except CaseError:
        pass  # the run is over: the host removes the sandbox
    report({"v": 1, "phase": "run", "exitCode": 0, "signal": None, "error": None, "files": [],
            "filesDropped": 0, "flooded": False, "cpuMs": round(total_cpu, 1), "flaggedImports": flagged}, 0)


def kill_quietly(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
