"""Unit tests of the runner's pure parts, on the host without Docker (python3 -m unittest)."""

import io
import json
import os
import sys
import tarfile
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pybox_runner import cases, child, main, memory, payload, policy, prefault, protocol, relay, text  # noqa: E402


def tar_of(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


class ProtocolTest(unittest.TestCase):
    def test_frame_layout(self):
        self.assertEqual(protocol.encode_frame(1, b"hi"), b"\x01\x00\x00\x00\x02hi")

    def test_output_is_split_into_frames_of_at_most_a_chunk(self):
        data = b"x" * (protocol.CHUNK * 2 + 5)
        frames = protocol.decode_frames(protocol.encode_frames(2, data))
        self.assertEqual([len(p) for _, p in frames], [protocol.CHUNK, protocol.CHUNK, 5])
        self.assertEqual(b"".join(p for _, p in frames), data)

    def test_report_is_ascii_json(self):
        [(kind, body)] = protocol.decode_frames(protocol.encode_report({"m": "\ud800é"}))
        self.assertEqual(kind, protocol.KIND_REPORT)
        body.decode("ascii")
        self.assertEqual(json.loads(body), {"m": "\ud800é"})


class TextTest(unittest.TestCase):
    def test_clip_keeps_head_and_tail(self):
        clipped = text.clip("a" * 50 + "b" * 50, 20)
        self.assertTrue(clipped.startswith("a" * 10) and clipped.endswith("b" * 10))
        self.assertIn("80 characters cut", clipped)
        self.assertEqual(text.clip("short", 20), "short")

    def test_exit_codes_as_the_interpreter_computes_them(self):
        self.assertEqual(text.exit_code_of(None), 0)
        self.assertEqual(text.exit_code_of(3), 3)
        self.assertEqual(text.exit_code_of(256 + 7), 7)
        shown = []
        self.assertEqual(text.exit_code_of("bye", shown.append), 1)
        self.assertEqual(shown, ["bye\n"])

    def test_syntax_error_with_caret_under_the_error(self):
        try:
            compile("x = (1,\n  y = = 2\n", "main.py", "exec")
        except SyntaxError as e:
            info = text.syntax_error_info(e)
        self.assertEqual(info["type"], "SyntaxError")
        self.assertIsNotNone(info["line"])
        self.assertTrue(info["caret"].endswith("^"))
        self.assertIn('File "main.py"', text.render_error_info(info))

    def test_long_line_is_windowed(self):
        src = "x = " + "1 + " * 200 + "$\n"
        try:
            compile(src, "main.py", "exec")
        except SyntaxError as e:
            info = text.syntax_error_info(e)
        self.assertLessEqual(len(info["text"]), text.SOURCE_WINDOW)
        self.assertEqual(info["text"][len(info["caret"]) - 1], "$")

    def test_nul_byte_is_a_value_error_without_place(self):
        try:
            compile("x = 1\x00", "main.py", "exec")
        except (SyntaxError, ValueError) as e:
            info = text.compile_error_info(e)
            located = isinstance(e, SyntaxError)
        shown = text.render_error_info(info, located=located)
        self.assertIn(info["type"], shown)

    def test_exception_type_names(self):
        self.assertEqual(text.exception_type_name(ValueError), "ValueError")
        self.assertEqual(text.exception_type_name(json.JSONDecodeError), "json.decoder.JSONDecodeError")


class PolicyTest(unittest.TestCase):
    POLICY = {"mode": "warn", "dangerous": ["os", "subprocess", "http.client"], "safe": ["os.path"]}

    def test_flags_imports_in_source_order(self):
        src = b"import subprocess\nfrom os import path\nfrom os import system\n__import__('http.client.x')\n"
        flagged, blocked = policy.check_imports(src, self.POLICY)
        self.assertIsNone(blocked)
        self.assertEqual(flagged, [{"module": "subprocess", "line": 1}, {"module": "os", "line": 3},
                                   {"module": "http.client.x", "line": 4}])

    def test_block_mode_gives_a_located_error(self):
        src = b"x = 1\nimport subprocess\n"
        flagged, blocked = policy.check_imports(src, dict(self.POLICY, mode="block"))
        self.assertEqual(flagged, [])
        self.assertEqual(blocked["type"], "ImportPolicyError")
        self.assertEqual(blocked["line"], 2)
        self.assertIn("subprocess (line 2)", blocked["message"])

    def test_off_and_unparsable(self):
        self.assertEqual(policy.check_imports(b"import os", None), ([], None))
        self.assertEqual(policy.check_imports(b"import os(", self.POLICY), ([], None))

    def test_module_matches_submodules_only(self):
        self.assertTrue(policy.module_matches("os.path", ["os"]))
        self.assertFalse(policy.module_matches("osx", ["os"]))


class PayloadTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()

    def tearDown(self):
        for root, dirs, files in os.walk(self.dir, topdown=False):
            for f in files:
                os.unlink(os.path.join(root, f))
            for d in dirs:
                os.rmdir(os.path.join(root, d))
        os.rmdir(self.dir)

    def test_safe_member_path(self):
        self.assertEqual(payload.safe_member_path("/w", "a/b.txt"), "/w/a/b.txt")
        for bad in ("", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", "a\\b", "a\x00b", "/".join("d" * 17)):
            self.assertIsNone(payload.safe_member_path("/w", bad), bad)

    def test_reads_request_stdin_and_files(self):
        stream = tar_of([(".pybox/request.json", b'{"args": ["a"]}'), (".pybox/stdin", b"in"),
                         ("main.py", b"print(1)"), ("data/x.csv", b"1,2"), ("../evil", b"no")])
        fd = os.memfd_create("t")
        try:
            os.write(fd, stream.getvalue())
            os.lseek(fd, 0, os.SEEK_SET)
            request = payload.read_request(fd)
            self.assertEqual(request, {"args": ["a"]})
            stdin = payload.read_rest(io.FileIO(fd, "rb", closefd=False), self.dir)
        finally:
            os.close(fd)
        self.assertEqual(stdin, b"in")
        with open(os.path.join(self.dir, "data", "x.csv"), "rb") as f:
            self.assertEqual(f.read(), b"1,2")
        self.assertFalse(os.path.exists(os.path.join(os.path.dirname(self.dir), "evil")))

    def test_a_payload_without_request_first_fails(self):
        for entries in ([("main.py", b"")], [(".pybox/request.json", b"[]")], [(".pybox/request.json", b"")]):
            fd = os.memfd_create("t")
            try:
                os.write(fd, tar_of(entries).getvalue())
                os.lseek(fd, 0, os.SEEK_SET)
                with self.assertRaises(ValueError, msg=repr(entries)):
                    payload.read_request(fd)
            finally:
                os.close(fd)

    def test_the_request_is_read_to_its_last_block_and_no_further(self):
        fd = os.memfd_create("t")
        try:
            os.write(fd, tar_of([(".pybox/request.json", b'{"a": 1}'), ("main.py", b"x")]).getvalue())
            os.lseek(fd, 0, os.SEEK_SET)
            payload.read_request(fd)
            self.assertEqual(os.lseek(fd, 0, os.SEEK_CUR), 1024)
        finally:
            os.close(fd)

    def test_out_dir_is_made_and_collected_within_caps(self):
        out = os.path.join(self.dir, "out")
        payload.make_out_dir(out)
        payload.make_out_dir(out)  # twice is fine
        self.assertTrue(os.path.isdir(out))
        for name, size in (("a.txt", 3), ("b.bin", 10), ("c.txt", 1)):
            with open(os.path.join(out, name), "wb") as f:
                f.write(b"z" * size)
        os.symlink("/etc/passwd", os.path.join(out, "link"))
        files, dropped = payload.collect_out_files(out, 10, 5)
        self.assertEqual([(f["path"], f["size"]) for f in files], [("a.txt", 3), ("c.txt", 1)])
        self.assertEqual(dropped, 2)  # b.bin over the byte cap, the link not a regular file
        files, dropped = payload.collect_out_files(out, 1, 100)
        self.assertEqual(len(files), 1)

    def test_a_file_named_out_wins(self):
        out = os.path.join(self.dir, "out")
        with open(out, "w") as f:
            f.write("mine")
        payload.make_out_dir(out)
        self.assertTrue(os.path.isfile(out))
        self.assertEqual(payload.collect_out_files(out, 10, 100), ([], 0))


class MemoryTest(unittest.TestCase):
    def write(self, root, name, content):
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, name), "w") as f:
            f.write(content)

    def test_cgroup_v1(self):
        with tempfile.TemporaryDirectory() as d:
            v1 = os.path.join(d, "memory")
            self.write(v1, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
            self.write(v1, "memory.failcnt", "17\n")
            self.write(v1, "memory.max_usage_in_bytes", "134217728\n")
            self.write(v1, "memory.limit_in_bytes", "134217728\n")
            self.assertEqual(memory.memory_accounting(v1, d),
                             {"oomKills": 2, "failcnt": 17, "peakBytes": 134217728, "limitBytes": 134217728})

    def test_cgroup_v2(self):
        with tempfile.TemporaryDirectory() as d:
            self.write(d, "memory.events", "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n")
            self.write(d, "memory.peak", "999\n")
            self.write(d, "memory.max", "max\n")
            self.assertEqual(memory.memory_accounting(os.path.join(d, "none"), d),
                             {"oomKills": 1, "failcnt": 5, "peakBytes": 999, "limitBytes": None})

    def test_no_counter_no_evidence(self):
        with tempfile.TemporaryDirectory() as d:
            # gVisor: a memory directory without an OOM counter
            self.write(os.path.join(d, "memory"), "memory.usage_in_bytes", "1\n")
            self.assertIsNone(memory.memory_accounting(os.path.join(d, "memory"), d))
            self.write(os.path.join(d, "memory"), "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n")
            self.assertIsNone(memory.memory_accounting(os.path.join(d, "memory"), d))

    def test_only_the_runs_own_kills_count(self):
        before = {"oomKills": 1, "failcnt": 0, "peakBytes": 5, "limitBytes": 9}
        after = {"oomKills": 3, "failcnt": 0, "peakBytes": 7, "limitBytes": 9}
        self.assertEqual(memory.since(before, after)["oomKills"], 2)
        self.assertEqual(memory.since(None, after)["oomKills"], 3)
        self.assertEqual(memory.since(before, dict(after, oomKills=1))["oomKills"], 0)
        self.assertIsNone(memory.since(before, None))

    def test_clamp(self):
        self.assertEqual(memory.clamp_counts({"oomKills": -1, "failcnt": 2 ** 60, "peakBytes": 5, "limitBytes": "x"}),
                         {"oomKills": None, "failcnt": None, "peakBytes": 5, "limitBytes": None})
        self.assertIsNone(memory.clamp_counts(None))


class ChildTest(unittest.TestCase):
    def test_env_is_laid_over_the_base(self):
        env = child.build_env({"env": {"A": "1", "PATH": "/x"}})
        self.assertEqual(env["A"], "1")
        self.assertEqual(env["PATH"], "/x")
        self.assertEqual(env["HOME"], "/tmp")

    def test_an_env_value_that_cannot_reach_a_process_is_a_setup_error(self):
        for bad in ({"X": "\ud800"}, {"\udcff": "v"}, {"A=B": "v"}, {"": "v"}, {"X": "a\x00b"}, {"X": 1}):
            with self.assertRaises(child.SetupError, msg=repr(bad)):
                child.build_env({"env": bad})

    def test_os_exit_in_the_code_says_its_exit_code_first_and_its_forks_do_not(self):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the code's process
            try:
                os._exit = child.said_exit(w, 0.0)
                fork = os.fork()
                if fork == 0:
                    os._exit(5)  # a fork of the code (multiprocessing's child): no word
                os.waitpid(fork, 0)
                os._exit(-1)  # exits with 255, and says so
            finally:
                child.REAL_EXIT(99)
        os.close(w)
        _, status = os.waitpid(pid, 0)
        with os.fdopen(r, "rb") as f:
            said = f.read()
        self.assertEqual(os.waitstatus_to_exitcode(status), 255)
        self.assertEqual(said.count(child.EXIT_MARK), 1)
        self.assertEqual(relay.parse_exit_mark(b"S" + said)[0], 255)
        self.assertIs(os._exit, child.REAL_EXIT)  # this process's own is untouched

    def test_close_other_fds_keeps_only_what_it_is_told(self):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                a, b = os.pipe()
                c, d = os.pipe()
                e = os.dup(a) + 40  # a descriptor well above the rest
                os.dup2(a, e)
                child.close_other_fds((b, d))

                def is_open(fd):
                    try:
                        os.fstat(fd)
                        return True
                    except OSError:
                        return False
                code = 0 if [is_open(fd) for fd in (a, b, c, d, e)] == [False, True, False, True, False] else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)

    def test_preload_names(self):
        self.assertEqual(child.preload_names(" numpy, pandas,,"), ["numpy", "pandas"])
        self.assertEqual(child.preload_names(None), [])

    def test_a_code_process_without_a_private_proc_fails_the_run_closed(self):
        # Under gVisor the code's process must have a /proc of its own before anything else: if it
        # cannot, it says why and the run is a setup failure, never a run with the runner in sight.
        class Failed(Exception):
            pass

        def no_proc():
            raise OSError(1, "mounting a private /proc failed")

        def setup_failure(message):
            raise Failed(message)

        saved = child.private_proc, main.setup_failure
        child.private_proc, main.setup_failure = no_proc, setup_failure
        store_fd = os.memfd_create("test-store", 0)
        try:
            process = main.Child([], True, store_fd)
            with self.assertRaises(Failed) as caught:
                process.wait_ready()
        finally:
            child.private_proc, main.setup_failure = saved
            os.close(store_fd)
        self.assertEqual(str(caught.exception),
                         "setting up the code's process failed: no /proc of its own: [Errno 1] mounting a private /proc failed")
        with self.assertRaises(ChildProcessError):
            os.waitpid(process.pid, os.WNOHANG)  # reaped


class PrefaultTest(unittest.TestCase):
    MAPS = b"""00400000-0041f000 r--p 00000000 08:01 12 /usr/bin/python3.11
0041f000-006d3000 r-xp 0001f000 08:01 12 /usr/bin/python3.11
00947000-00a85000 rw-p 00347000 08:01 12 /usr/bin/python3.11
00aca000-00bcb000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000001000 ---p 00000000 00:00 0
7f0000001000-7f0000801000 rw-p 00000000 00:00 0
7ffc00000000-7ffc00800000 rw-p 00000000 00:00 0 [stack]
7ffc00900000-7ffc00902000 r--p 00000000 00:00 0 [vvar]
7ffc00902000-7ffc00904000 r-xp 00000000 00:00 0 [vdso]
garbage line
zz-yy rw-p 00000000 00:00 0
"""

    def test_readable_regions_skip_guards_stack_and_kernel_pages(self):
        self.assertEqual(prefault.readable_regions(self.MAPS), [
            (0x400000, 0x41f000), (0x41f000, 0x6d3000), (0x947000, 0xa85000), (0xaca000, 0xbcb000),
            (0x7f0000001000, 0x7f0000801000),
        ])

    def test_chunk_within_the_memlock_limit(self):
        self.assertEqual(prefault.chunk_size(prefault.resource.RLIM_INFINITY, 4096), prefault.CHUNK)
        self.assertEqual(prefault.chunk_size(64 * 1024, 4096), 64 * 1024)
        self.assertEqual(prefault.chunk_size(10000, 4096), 8192)
        self.assertEqual(prefault.chunk_size(100, 4096), 0)

    def test_populate_leaves_memory_as_it_was(self):
        data = bytearray(b"pybox" * 50000)
        before = bytes(data)
        self.assertGreaterEqual(prefault.populate(), 0)
        self.assertEqual(bytes(data), before)


class ResultTest(unittest.TestCase):
    def test_setup_failure_before_the_code(self):
        self.assertEqual(main.parse_result(b'F"bad env"'), ("bad env", None))
        self.assertEqual(main.parse_result(b"F{oops"), ("setting up the run failed", None))

    def test_the_code_error_after_start(self):
        self.assertEqual(main.parse_result(b'S{"type": "E"}'), (None, {"type": "E"}))
        self.assertEqual(main.parse_result(b"S"), (None, None))
        self.assertEqual(main.parse_result(b"S[1]"), (None, None))
        self.assertEqual(main.parse_result(b""), (None, None))

    def test_the_exit_mark_is_not_part_of_the_error(self):
        self.assertEqual(main.parse_result(b'S{"type": "E"}\x00EXIT [1, 2.5]\n'), (None, {"type": "E"}))
        self.assertEqual(main.parse_result(b"S\x00EXIT [0, 1]\n"), (None, None))

    def test_exit_mark(self):
        self.assertEqual(relay.parse_exit_mark(b'S{"a": 1}\x00EXIT [3, 12.5]\n'), (3, 12.5, None))
        self.assertEqual(relay.parse_exit_mark(b'S\x00EXIT [0, 1.5, 7.25]\n'), (0, 1.5, 7.25))
        self.assertEqual(relay.parse_exit_mark(b'S\x00EXIT [0, 1.5, -1]\n'), (0, 1.5, None))
        self.assertIsNone(relay.parse_exit_mark(b'S\x00EXIT [0, 1, 2, 3]\n'))
        self.assertIsNone(relay.parse_exit_mark(b"S\x00EXIT [3, 1"))  # not complete yet
        self.assertIsNone(relay.parse_exit_mark(b"S"))
        for bad in (b"[300, 1]", b"[-1, 1]", b"[true, 1]", b'["0", 1]', b"[0]", b"{}"):
            self.assertIsNone(relay.parse_exit_mark(b"S\x00EXIT " + bad + b"\n"), bad)
        self.assertEqual(relay.parse_exit_mark(b"S\x00EXIT [0, -5]\n"), (0, None, None))

    def test_the_code_cannot_forge_a_setup_failure(self):
        # After b"S" everything may be the code's: a setup failure it writes is no setup failure.
        self.assertEqual(main.parse_result(b'SF"forged"'), (None, None))

    def test_the_runs_cpu_time_leaves_out_preloading(self):
        self.assertEqual(main.run_cpu_ms(1040.0, 700.0), 340.0)
        self.assertEqual(main.run_cpu_ms(12.5, None), 12.5)
        self.assertEqual(main.run_cpu_ms(5.0, 10.0), 0.0)  # clock ticks are coarser than rusage
        self.assertIsNone(main.run_cpu_ms(None, 10.0))

    def test_cpu_time_of_a_live_process(self):
        own = main.process_cpu_ms(os.getpid())
        self.assertIsNotNone(own)
        self.assertGreaterEqual(own, 0)
        self.assertIsNone(main.process_cpu_ms(2 ** 22 + 12345))  # no such process

    def test_run_report_from_a_wait_status(self):
        r = main.run_report(9, None, [], False, 1.0, [], 0, None)  # killed by SIGKILL
        self.assertEqual((r["exitCode"], r["signal"]), (137, 9))
        self.assertNotIn("memory", r)
        r = main.run_report(3 << 8, None, [], False, 1.0, [], 0, {"oomKills": 0})
        self.assertEqual((r["exitCode"], r["signal"], r["memory"]), (3, None, {"oomKills": 0}))

    def test_run_report_says_whether_the_code_said_its_end(self):
        self.assertIs(main.run_report(1 << 8, None, [], False, 1.0, [], 0, None)["endSaid"], True)
        self.assertIs(main.run_report(1 << 8, None, [], False, 1.0, [], 0, None, end_said=False)["endSaid"], False)


class CasePayloadTest(unittest.TestCase):
    def test_cases_go_to_the_store_and_each_blob_holds_only_its_case(self):
        stream = tar_of([
            ("main.py", b"print(1)"), ("shared.txt", b"s"), ("data/x", b"theirs"),
            (".pybox/cases/0/stdin", b"in0"), (".pybox/cases/0/args", b'["a", "b"]'),
            (".pybox/cases/1/files/data/x", b"mine"), (".pybox/cases/1/files/../evil", b"no"),
            (".pybox/cases/7/stdin", b"out of range"), (".pybox/cases/x/stdin", b"no"), (".pybox/other", b"no"),
        ])
        store = os.memfd_create("store")
        try:
            index = payload.read_cases(stream, 2, store)
            self.assertEqual(payload.store_read(store, index["main"]), b"print(1)")
            self.assertEqual([(p, payload.store_read(store, [o, n])) for p, o, n in index["files"]],
                             [("shared.txt", b"s"), ("data/x", b"theirs")])
            self.assertEqual(payload.case_blob(store, index["cases"][0]), (["a", "b"], b"in0", []))
            self.assertEqual(payload.case_blob(store, index["cases"][1]), ([], b"", [("data/x", b"mine")]))
            with self.assertRaises(ValueError):
                payload.case_blob(store, [index["cases"][1][0], index["cases"][1][1] + 100])
        finally:
            os.close(store)

    def test_args_must_be_strings(self):
        store = os.memfd_create("store")
        try:
            with self.assertRaises(ValueError):
                payload.read_cases(tar_of([(".pybox/cases/0/args", b"[1]")]), 1, store)
        finally:
            os.close(store)

    def test_tests_must_be_a_short_list(self):
        self.assertEqual(payload.test_count({}), 0)
        self.assertEqual(payload.test_count({"tests": [{}, {}]}), 2)
        for bad in ({"tests": []}, {"tests": {}}, {"tests": 3}, {"tests": [{}] * (payload.MAX_CASES + 1)}):
            with self.assertRaises(ValueError, msg=repr(bad)[:50]):
                payload.test_count(bad)


class CasesTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()

    def tearDown(self):
        if os.path.isdir(self.dir):
            os.chmod(self.dir, 0o700)
            cases.empty_dir(self.dir)
            os.rmdir(self.dir)

    def test_empty_dir_removes_whatever_the_code_left(self):
        d = self.dir
        deep = os.path.join(d, *(["n"] * 300))  # deeper than the descriptor limit a sandbox has
        os.makedirs(deep)
        with open(os.path.join(deep, "f"), "w") as f:
            f.write("x")
        os.mkdir(os.path.join(d, "locked"))
        with open(os.path.join(d, "locked", "f"), "w") as f:
            f.write("x")
        os.chmod(os.path.join(d, "locked"), 0)
        os.mkfifo(os.path.join(d, "fifo"))
        os.symlink("/", os.path.join(d, "root-link"))
        os.symlink(d, os.path.join(d, "loop"))
        os.mkdir(os.path.join(d, "ro"))
        with open(os.path.join(d, "ro", "f"), "w") as f:
            f.write("x")
        os.chmod(os.path.join(d, "ro", "f"), 0)
        os.chmod(os.path.join(d, "ro"), 0o500)
        cwd = os.getcwd()
        try:
            cases.empty_dir(d)
        finally:
            os.chdir(cwd)
        self.assertEqual(os.listdir(d), [])

    def test_wipe_gives_back_the_modes(self):
        with open(os.path.join(self.dir, "f"), "w") as f:
            f.write("x")
        places = cases.writable_places([self.dir, os.path.join(self.dir, "missing")])
        self.assertEqual(list(places), [self.dir])
        os.chmod(self.dir, 0o500)
        cwd = os.getcwd()
        try:
            cases.wipe(places)
        finally:
            os.chdir(cwd)
        self.assertEqual(os.listdir(self.dir), [])
        self.assertEqual(os.stat(self.dir).st_mode & 0o777, places[self.dir])

    def test_fill_work_lays_files_out(self):
        cases.fill_work(self.dir, b"print(1)", [("a/b.txt", b"1"), ("../x", b"no"), ("main.py", b"no"), ("a", b"clash")])
        self.assertEqual(sorted(os.listdir(self.dir)), ["a", "main.py", "out"])
        with open(os.path.join(self.dir, "main.py"), "rb") as f:
            self.assertEqual(f.read(), b"print(1)")
        self.assertTrue(os.path.isdir(os.path.join(self.dir, "out")))

    def test_sysv_ids(self):
        path = os.path.join(self.dir, "shm")
        with open(path, "w") as f:
            f.write("       key      shmid perms size\n     24301     32769   600  4096\n  0 7 600 1\n")
        self.assertEqual(cases.sysv_ids(path), [32769, 7])
        self.assertEqual(cases.sysv_ids(os.path.join(self.dir, "none")), [])

    def test_other_pids(self):
        for name in ("1", "42", str(os.getpid()), "self", "sys"):
            os.mkdir(os.path.join(self.dir, name))
        self.assertEqual(sorted(cases.other_pids({42}, self.dir)), [1])

    def test_case_output_keeps_up_to_the_cap(self):
        out = cases.CaseOutput(5)
        out.emit(1, b"abc")
        out.emit(1, b"defgh")
        out.emit(2, b"e")
        out.emit(9, b"ignored")
        self.assertEqual(out.stream(1, 8), {"b64": "YWJjZGU=", "totalBytes": 8, "truncated": True})
        self.assertEqual(out.stream(2, 1), {"b64": "ZQ==", "totalBytes": 1, "truncated": False})

    def test_case_kind(self):
        self.assertEqual(cases.case_kind(0, False, True, None, None), "output_limit")
        self.assertEqual(cases.case_kind(9, True, False, None, None), "timeout")
        self.assertEqual(cases.case_kind(9, False, False, {"oomKills": 1}, {"oomKills": 2}), "oom")
        self.assertEqual(cases.case_kind(0, False, False, {"oomKills": 1}, {"oomKills": 2}), "finished")  # it exited 0
        self.assertEqual(cases.case_kind(9, False, False, {"oomKills": 2}, {"oomKills": 2}), "finished")  # killed itself
        self.assertEqual(cases.case_kind(9, False, False, None, None), "finished")  # gVisor: no counter

    def test_case_report(self):
        out = cases.CaseOutput(10)
        out.emit(1, b"hi\n")
        r = cases.case_report(3, "finished", 9, None, 12.345, 1.0, out, {1: 3})
        self.assertEqual((r["index"], r["exitCode"], r["signal"], r["durationMs"]), (3, 137, 9, 12.3))
        self.assertEqual(r["stdout"]["b64"], "aGkK")
        r = cases.case_report(0, "timeout", 9, {"type": "X"}, 1000, None, cases.CaseOutput(10), {})
        self.assertEqual((r["exitCode"], r["signal"], r["error"]), (None, None, None))
        r = cases.case_report(0, "finished", 3 << 8, {"type": "E"}, 1, 1, cases.CaseOutput(10), {})
        self.assertEqual((r["exitCode"], r["signal"], r["error"]), (3, None, {"type": "E"}))


if __name__ == "__main__":
    unittest.main()
