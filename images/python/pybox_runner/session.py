"""Session mode: the runner keeps a live interpreter and serves calls until the host closes stdin.

The initial archive holds only `.pybox/request.json` ("session": true, env, caps); the session's
files come as a PUT right after. The runner answers the payload with a REPLY once the interpreter
is up, then reads host frames on stdin, [kind u8][u32 BE length][payload]:

  1 CALL       JSON {id, code, stdin, timeoutMs}: runs code in the interpreter (one at a time)
  2 INTERRUPT  empty: the caller cancelled the running call
  3 PUT        a tar of files for /work          -> REPLY
  4 GET        JSON {path, maxBytes}             -> REPLY {ok, data: base64}
  5 LIST       JSON {max}                        -> REPLY {ok, files: [{path, size}], truncated}

and writes, besides the call's output frames (1, 2):

  6 CALL_END   JSON {v, id, kind, phase, exitCode, signal, error, outputs, outputsDropped, cpuMs,
               wallMs, stateLost}: once per CALL, after all of its output
  7 REPLY      JSON {ok: true, ...} or {ok: false, code: not_found | too_large | invalid, message}

The runner, not the interpreter, enforces each call's limits: past timeoutMs (or on INTERRUPT, or
past floodBytes of output) it sends the interpreter SIGINT (KeyboardInterrupt in the code); if the
call has not ended interruptGraceMs later it kills the interpreter and everything it started and
starts a fresh one (stateLost: variables and imports are gone, files stay). An interpreter that
dies (os._exit, a signal, the memory limit) is restarted the same way. The code cannot end the
runner: it is init (runc), and under gVisor the interpreter has a PID namespace of its own."""

import ast
import base64
import json
import marshal
import os
import pickle
import select
import signal
import sys
import time

from . import child as child_mod
from . import interpreter
from .cases import sweep, CaseError
from .memory import memory_accounting, since
from .payload import read_exactly
from .protocol import CHUNK, KIND_CALL_END, KIND_REPLY, KIND_STDERR, KIND_STDOUT, encode_frame, encode_frames, write_all
from .relay import kill_all, process_cpu_ms, release_tracee
from .rich import OUTPUT_TYPES
from .text import MESSAGE_LIMIT, TRACEBACK_LIMIT, clip, compile_error_info, safe_str
from .workfiles import FileError, list_files, put_tar, read_file

HOST_CALL, HOST_INTERRUPT, HOST_PUT, HOST_GET, HOST_LIST = 1, 2, 3, 4, 5
MAX_HOST_FRAME = 512 << 20
END_OF_ARCHIVE = 1024
READY_TIMEOUT_S = 120.0
# Reads of a pipe after a call's end: what the code wrote before it ended is there; a thread that
# keeps writing cannot hold the end back for longer than this many reads.
DRAIN_READS = 64


def emit(kind, payload):
    write_all(1, encode_frame(kind, payload))


def emit_json(kind, data):
    emit(kind, json.dumps(data, ensure_ascii=True, separators=(",", ":")).encode())


def reply_error(code, message):
    emit_json(KIND_REPLY, {"ok": False, "code": code, "message": clip(message, 1000)})


def cap(caps, name, default, low, high):
    value = caps.get(name, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return default
    return max(low, min(high, int(value)))


def read_end_of_archive(fd):
    """The session's archive holds only its request: what follows it is the archive's end (two
    zero blocks), read to its last byte so the host's frames start right after."""
    if read_exactly(fd, END_OF_ARCHIVE) != bytes(END_OF_ARCHIVE):
        raise ValueError("a session's archive holds only its request (its files come as a PUT)")


def split_last_expression(source, filename):
    """(body code, last-expression code or None), compiled as the interactive interpreter would
    show the last expression's value. Raises on anything that does not compile."""
    tree = compile(source, filename, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    body = compile(tree, filename, "exec", dont_inherit=True)
    return body, (compile(last, filename, "eval", dont_inherit=True) if last is not None else None)


def checked_error(value):
    """The code's error as the interpreter reported it (hostile), reduced to known fields, or None."""
    if not isinstance(value, dict):
        return None
    kind, message, line, tb = value.get("type"), value.get("message"), value.get("line"), value.get("traceback")
    return {
        "type": clip(kind, 200) if isinstance(kind, str) and kind else "Exception",
        "message": clip(message, MESSAGE_LIMIT) if isinstance(message, str) else "",
        "line": line if isinstance(line, int) and not isinstance(line, bool) and 0 < line < 10 ** 9 else None,
        "traceback": clip(tb, TRACEBACK_LIMIT) if isinstance(tb, str) else None,
    }


def checked_outputs(values, max_count, max_bytes):
    """(outputs, dropped): the rich outputs within the caps; anything else is counted as dropped."""
    if not isinstance(values, list):
        return [], 0
    kept, dropped = [], 0
    b64_limit = -(-max_bytes // 3) * 4
    for o in values[:max_count * 4 + 16]:
        ok = isinstance(o, dict) and o.get("type") in OUTPUT_TYPES and o.get("kind") in ("figure", "result") \
            and isinstance(o.get("data"), str) and len(kept) < max_count
        if ok:
            data = o["data"]
            try:
                size = len(data) if o["type"] == "image/png" else len(data.encode("utf-8"))
            except UnicodeEncodeError:
                size = None
            ok = size is not None and size <= (b64_limit if o["type"] == "image/png" else max_bytes)
        if ok:
            kept.append({"type": o["type"], "data": o["data"], "kind": o["kind"]})
        else:
            dropped += 1
    return kept, dropped + max(0, len(values) - (max_count * 4 + 16))


class Interp:
    """The interpreter process as the runner holds it."""

    def __init__(self, env, isolated, names):
        cmd_r, self.cmd_w = os.pipe()
        self.out_r, out_w = os.pipe()
        self.err_r, err_w = os.pipe()
        self.res_r, res_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                for fd in (self.cmd_w, self.out_r, self.err_r, self.res_r):
                    os.close(fd)
                interpreter.interpreter_main(cmd_r, out_w, err_w, res_w, env, isolated, names)
            finally:
                os._exit(70)
        for fd in (cmd_r, out_w, err_w, res_w):
            os.close(fd)
        self.status = None
        self.rusage_ms = None
        self.pending = b""  # command bytes not yet taken by the interpreter
        self.result = bytearray()
        self.closed = set()  # pipes whose every writer is gone

    def wait_ready(self):
        """None once ready; else why it could not start (it is then reaped)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        got = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.res_r], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(self.res_r, 16384)
            if not chunk:
                break
            got += chunk
            if got[:1] == b"P":
                for fd in (self.out_r, self.err_r, self.res_r, self.cmd_w):
                    os.set_blocking(fd, False)
                return None
            if got[:1] != b"F":
                break
        message = "the interpreter could not be started"
        if got[:1] == b"F":
            try:
                said = json.loads(got[1:])
                if isinstance(said, str):
                    message = said
            except ValueError:
                pass
        self.kill()
        return message

    def send(self, message):
        self.pending += len(message).to_bytes(4, "big") + message
        self.flush()

    def flush(self):
        """Writes what the interpreter's pipe takes now; the rest waits (the runner never blocks)."""
        while self.pending:
            try:
                n = os.write(self.cmd_w, self.pending[:CHUNK])
            except BlockingIOError:
                return
            except OSError:
                self.pending = b""
                return
            self.pending = self.pending[n:]

    def kill(self):
        """SIGKILLs the interpreter and every process of the code, and reaps the interpreter."""
        kill_all(None)
        while self.status is None:
            try:
                pid, st, usage = os.wait4(self.pid, 0)
            except ChildProcessError:
                self.status = 9  # reaped elsewhere: it was killed
                break
            except InterruptedError:
                continue
            if os.WIFSTOPPED(st):
                release_tracee(pid, st)
                continue
            self.died(st, usage)

    def died(self, st, usage):
        self.status = st
        self.rusage_ms = (usage.ru_utime + usage.ru_stime) * 1000.0 if usage is not None else None

    def close(self):
        for fd in (self.cmd_w, self.out_r, self.err_r, self.res_r):
            try:
                os.close(fd)
            except OSError:
                pass


class Call:
    def __init__(self, call_id, timeout_s, state_lost, pid):
        self.id = call_id
        self.started = time.monotonic()
        self.deadline = self.started + timeout_s
        self.kill_at = None
        self.interrupted = None  # 'timeout' | 'cancelled' | 'output_limit' once SIGINT was sent
        self.state_lost = state_lost
        self.counts = {KIND_STDOUT: 0, KIND_STDERR: 0}
        self.cpu_before = process_cpu_ms(pid, waited_children=True)
        self.memory_before = memory_accounting()


class Session:
    def __init__(self, request, isolated):
        caps = request.get("caps") if isinstance(request.get("caps"), dict) else {}
        self.flood = cap(caps, "floodBytes", 1 << 20, 1024, 1 << 40)
        self.max_outputs = cap(caps, "maxOutputs", 10, 0, 100)
        self.max_output_bytes = cap(caps, "maxOutputBytes", 2 << 20, 1024, 64 << 20)
        self.grace_s = cap(caps, "interruptGraceMs", 2000, 100, 60000) / 1000.0
        # JSON with ASCII escapes: a text output may take up to 6 bytes per byte.
        self.result_limit = (self.max_outputs + 1) * (6 * self.max_output_bytes + 1024) + 8 * TRACEBACK_LIMIT + 65536
        self.env = child_mod.build_env(request)
        self.isolated = isolated
        self.names = child_mod.preload_names(os.environ.get("PYBOX_PRELOAD"))
        self.interp = None
        self.call = None
        self.state_lost = False  # the interpreter was restarted between calls: the next call says so
        self.calls = 0
        self.inbox = bytearray()

    # ---- the interpreter -------------------------------------------------------------------

    def start_interpreter(self):
        if self.isolated and not isolate_again():
            fatal("cannot make a PID namespace for the interpreter")
        interp = Interp(self.env, self.isolated, self.names)
        why = interp.wait_ready()
        if why is not None:
            interp.close()
            fatal(why)
        self.interp = interp

    # ---- the loop --------------------------------------------------------------------------

    def serve(self):
        wake_r, wake_w = os.pipe()
        for fd in (wake_r, wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(wake_w)
        # Only to wake the loop; as init the runner has no handler for anything the code could use.
        signal.signal(signal.SIGCHLD, lambda *_: None)
        while True:
            interp = self.interp
            fds = {0: "host", wake_r: "wake"}
            for fd, what in ((interp.out_r, KIND_STDOUT), (interp.err_r, KIND_STDERR), (interp.res_r, "result")):
                if fd not in interp.closed:
                    fds[fd] = what
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN)
            if interp.pending:
                poller.register(interp.cmd_w, select.POLLOUT)
                fds[interp.cmd_w] = "cmd"
            timeout = self.next_timeout()
            try:
                events = poller.poll(None if timeout is None else max(0, int(timeout * 1000) + 1))
            except InterruptedError:
                events = []
            host_ready = False
            for fd, ev in events:
                if self.interp is not interp:
                    break  # restarted meanwhile: the rest were the old interpreter's descriptors
                what = fds.get(fd)
                if what == "wake":
                    drain_quietly(fd)
                elif what == "cmd":
                    interp.flush()
                elif what == "host":
                    host_ready = True
                elif what in (KIND_STDOUT, KIND_STDERR):
                    self.read_output(interp, fd, what)
                elif what == "result":
                    self.read_result(interp)
            self.reap()
            if self.interp is interp and interp.status is not None:
                self.on_death()
            elif self.interp is interp and interp.res_r in interp.closed:
                self.broken("the interpreter closed its result channel")
            self.check_deadlines()
            if host_ready:
                self.read_host()

    def next_timeout(self):
        c = self.call
        if c is None:
            return None
        now = time.monotonic()
        at = c.kill_at if c.kill_at is not None else c.deadline
        return max(0.0, at - now)

    def reap(self):
        while True:
            try:
                pid, st, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            if os.WIFSTOPPED(st):
                release_tracee(pid, st)
            elif self.interp is not None and pid == self.interp.pid and self.interp.status is None:
                self.interp.died(st, usage)

    def check_deadlines(self):
        c = self.call
        if c is None:
            return
        now = time.monotonic()
        if c.kill_at is not None and now >= c.kill_at:
            self.interp.kill()
            self.on_death()
        elif c.interrupted is None and now >= c.deadline:
            self.interrupt("timeout")

    def interrupt(self, kind):
        c = self.call
        if c is None or c.interrupted is not None:
            return
        c.interrupted = kind
        c.kill_at = time.monotonic() + self.grace_s
        try:
            os.kill(self.interp.pid, signal.SIGINT)
        except OSError:
            pass

    # ---- the interpreter's pipes -----------------------------------------------------------

    def read_output(self, interp, fd, kind):
        try:
            data = os.read(fd, CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            self.relay(kind, data)
        else:
            interp.closed.add(fd)  # the code closed its end (and so did every process it started)

    def relay(self, kind, data):
        c = self.call
        if c is None:
            return  # a thread of an earlier call: nobody asked for this output
        c.counts[kind] += len(data)
        if c.counts[kind] > self.flood:
            self.interrupt("output_limit")
            if c.counts[kind] > 2 * self.flood and c.kill_at is not None:
                c.kill_at = time.monotonic()  # still flooding after the interrupt: restart now
            return
        emit(kind, data)

    def drain_output(self, interp):
        for fd, kind in ((interp.out_r, KIND_STDOUT), (interp.err_r, KIND_STDERR)):
            for _ in range(DRAIN_READS):
                try:
                    data = os.read(fd, CHUNK)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                if not data:
                    break
                self.relay(kind, data)

    def read_result(self, interp):
        try:
            data = os.read(interp.res_r, CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            interp.closed.add(interp.res_r)
            return
        interp.result += data
        while interp.result:
            buf = interp.result
            if buf[:1] != b"E" or len(buf) > self.result_limit + 5:
                return self.broken("the interpreter's result channel carried something else")
            if len(buf) < 5:
                return
            size = int.from_bytes(buf[1:5], "big")
            if size > self.result_limit:
                return self.broken("the interpreter's result was over its size limit")
            if len(buf) < 5 + size:
                return
            payload = bytes(buf[5:5 + size])
            del buf[:5 + size]
            if self.call is None:
                return self.broken("the interpreter reported the end of a call that was not running")
            self.call_ended(payload)

    def broken(self, why):
        """The code wrote on the interpreter's own channel: the interpreter cannot be trusted to
        say when a call ends any more. It is replaced."""
        sys.stderr.write("pybox runner: %s; restarting the interpreter\n" % why)
        self.interp.kill()
        self.on_death()

    # ---- a call's end ----------------------------------------------------------------------

    def call_ended(self, payload):
        c = self.call
        interp = self.interp
        try:
            said = json.loads(payload)
        except ValueError:
            said = None
        if not isinstance(said, dict):
            return self.broken("the interpreter's result is not JSON")
        self.drain_output(interp)
        exit_code = said.get("exitCode")
        if not isinstance(exit_code, int) or isinstance(exit_code, bool) or not 0 <= exit_code <= 255:
            exit_code = 1
        outputs, dropped = checked_outputs(said.get("outputs"), self.max_outputs, self.max_output_bytes)
        extra = said.get("outputsDropped")
        if isinstance(extra, int) and not isinstance(extra, bool) and 0 <= extra < 10 ** 6:
            dropped += extra
        cpu_after = process_cpu_ms(interp.pid, waited_children=True)
        self.finish(c, c.interrupted or "finished", exit_code, None, checked_error(said.get("error")), outputs, dropped,
                    cpu_ms(c.cpu_before, cpu_after), c.state_lost)

    def on_death(self):
        """The interpreter is gone (died, or killed by us): the running call ends with what it did,
        and a fresh interpreter takes its place."""
        interp = self.interp
        c = self.call
        self.drain_output(interp)
        st = interp.status if interp.status is not None else 9
        code = os.waitstatus_to_exitcode(st) if interp.status is not None else -9
        signum = -code if code < 0 else None
        kind = "finished"
        acc = since(c.memory_before, memory_accounting()) if c is not None else None
        if c is not None:
            kind = c.interrupted or "finished"
            kills = acc.get("oomKills") if acc else None
            if isinstance(kills, int) and kills > 0 and c.interrupted != "output_limit":
                kind = "oom"
        self.restart_without_call()
        if c is not None:
            self.finish(c, kind, (128 + signum) if signum is not None else min(code, 255), signum, None, [], 0,
                        cpu_ms(c.cpu_before, interp.rusage_ms), True)
        else:
            self.state_lost = True
        # Started after the call's end went out: the host has its answer a fork sooner.
        self.interp = None
        self.start_interpreter()

    def restart_without_call(self):
        old = self.interp
        old.kill()
        old.close()
        try:
            sweep(set())
        except CaseError as e:
            fatal("the code's processes could not be ended: %s" % e)

    def finish(self, c, kind, exit_code, signum, error, outputs, dropped, cpu, state_lost):
        wall_ms = round((time.monotonic() - c.started) * 1000.0, 1)
        self.call = None
        emit_json(KIND_CALL_END, {
            "v": 1, "id": c.id, "kind": kind, "phase": "run", "exitCode": exit_code, "signal": signum,
            "error": error, "outputs": outputs, "outputsDropped": dropped, "cpuMs": cpu, "wallMs": wall_ms,
            "stateLost": state_lost,
        })

    # ---- host frames -----------------------------------------------------------------------

    def read_host(self):
        try:
            data = os.read(0, 1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            quit_session()
        self.inbox += data
        while len(self.inbox) >= 5:
            kind = self.inbox[0]
            size = int.from_bytes(self.inbox[1:5], "big")
            if not HOST_CALL <= kind <= HOST_LIST or size > MAX_HOST_FRAME:
                sys.stderr.write("pybox runner: a malformed frame from the host\n")
                quit_session()
            if len(self.inbox) < 5 + size:
                return
            payload = bytes(self.inbox[5:5 + size])
            del self.inbox[:5 + size]
            self.host_frame(kind, payload)

    def host_frame(self, kind, payload):
        if kind == HOST_INTERRUPT:
            self.interrupt("cancelled")
        elif kind == HOST_CALL:
            self.start_call(payload)
        elif kind == HOST_PUT:
            try:
                put_tar(child_mod.WORK, payload)
                emit_json(KIND_REPLY, {"ok": True})
            except FileError as e:
                reply_error(e.code, e.message)
        elif kind == HOST_GET:
            ask = parse_json(payload)
            max_bytes = ask.get("maxBytes") if ask else None
            if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or not 0 <= max_bytes <= MAX_HOST_FRAME:
                return reply_error("invalid", "a GET needs a path and maxBytes")
            try:
                data = read_file(child_mod.WORK, ask.get("path"), max_bytes)
            except FileError as e:
                return reply_error(e.code, e.message)
            emit(KIND_REPLY, b'{"ok":true,"data":"' + base64.b64encode(data) + b'"}')
        elif kind == HOST_LIST:
            ask = parse_json(payload)
            limit = ask.get("max") if ask else None
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
                return reply_error("invalid", "a LIST needs max")
            files, truncated = list_files(child_mod.WORK, limit)
            emit_json(KIND_REPLY, {"ok": True, "files": files, "truncated": truncated})

    def start_call(self, payload):
        ask = parse_json(payload)
        call_id = ask.get("id") if ask else None
        code, stdin, timeout_ms = (ask.get("code"), ask.get("stdin"), ask.get("timeoutMs")) if ask else (None, None, None)
        if self.call is not None or not isinstance(call_id, str) or not isinstance(code, str) or not isinstance(stdin, str) \
                or not isinstance(timeout_ms, (int, float)) or isinstance(timeout_ms, bool) or not 0 < timeout_ms <= 86_400_000:
            # The host's own mistake: a session that cannot trust its host ends.
            sys.stderr.write("pybox runner: a malformed or overlapping call from the host\n")
            quit_session()
        self.calls += 1
        filename = "%s%d>" % (interpreter.CALL_PREFIX, self.calls)
        state_lost, self.state_lost = self.state_lost, False
        try:
            body, last = split_last_expression(code, filename)
        except Exception as e:
            info = compile_error_info(e)
            shown = render_compile_error(info, filename, isinstance(e, SyntaxError))
            write_all(1, encode_frames(KIND_STDERR, clip(shown, TRACEBACK_LIMIT).encode("utf-8", "backslashreplace")))
            emit_json(KIND_CALL_END, {
                "v": 1, "id": call_id, "kind": "finished", "phase": "validation", "exitCode": 1, "signal": None,
                "error": validation_error(info), "outputs": [], "outputsDropped": 0, "cpuMs": 0, "wallMs": 0,
                "stateLost": state_lost,
            })
            return
        try:
            stdin_bytes = stdin.encode("utf-8", "surrogatepass")
        except UnicodeEncodeError:
            stdin_bytes = stdin.encode("utf-8", "replace")
        self.call = Call(call_id, timeout_ms / 1000.0, state_lost, self.interp.pid)
        message = pickle.dumps({"body": marshal.dumps(body), "last": None if last is None else marshal.dumps(last),
                                "stdin": stdin_bytes, "filename": filename, "source": code,
                                "maxOutputs": self.max_outputs, "maxOutputBytes": self.max_output_bytes})
        self.interp.send(message)


def validation_error(info):
    out = {"type": clip(str(info.get("type") or "SyntaxError"), 200), "message": clip(safe_str(info.get("message") or ""), MESSAGE_LIMIT),
           "line": info.get("line") if isinstance(info.get("line"), int) else None}
    for k in ("column", "text", "caret"):
        if k in info:
            out[k] = info[k]
    return out


def render_compile_error(info, filename, located):
    if not located:
        return "%s: %s\n" % (info["type"], info["message"])
    return '  File "%s", line %s\n    %s\n    %s\n%s: %s\n' % (
        filename, info["line"], info["text"] or "", info["caret"] or "", info["type"], info["message"])


def parse_json(payload):
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def cpu_ms(before, after):
    if before is None or after is None:
        return None
    return round(max(0.0, after - before), 1)


def drain_quietly(fd):
    try:
        while os.read(fd, 512):
            pass
    except OSError:
        pass


def isolate_again():
    from .main import isolate
    return isolate(again=True)


def fatal(message):
    """The session cannot go on (no interpreter can be started): the runner says why and exits;
    the host sees its sandbox end."""
    sys.stderr.write("pybox runner: %s\n" % message)
    sys.stderr.flush()
    quit_session(1)


def quit_session(code=0):
    """The host closed stdin (or cannot be trusted): nothing of the code outlives the runner."""
    kill_all(None)
    os._exit(code)


def serve_session(request, child, isolated):
    """The runner's session mode, after the READY frame and the request: never returns."""
    try:
        read_end_of_archive(0)
        session = Session(request, isolated)
    except (ValueError, OSError, child_mod.SetupError) as e:
        reply_error("invalid", "bad session payload: %s" % safe_str(e))
        quit_session(1)
    # The process forked ahead of the payload was made for a single run: the interpreter is made
    # for the session (under gVisor in a PID namespace of its own, as each restart's is).
    child.discard()
    session.start_interpreter()
    emit_json(KIND_REPLY, {"ok": True})
    session.serve()
