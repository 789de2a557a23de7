"""Unit tests of the session mode's pure parts, on the host without Docker (python3 -m unittest).
The session loop itself kills every process it can see: it runs only inside a sandbox
(test/integration/session-sandbox.test.ts)."""

import io
import json
import os
import sys
import tarfile
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pybox_runner import interpreter, session, workfiles  # noqa: E402


def tar_bytes(entries, links=()):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            t.addfile(info)
    return buf.getvalue()


class WorkFilesTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = os.path.join(self.tmp.name, "work")
        self.outside = os.path.join(self.tmp.name, "outside")
        os.mkdir(self.root)
        os.mkdir(self.outside)
        with open(os.path.join(self.outside, "secret"), "w") as f:
            f.write("secret")

    def tearDown(self):
        self.tmp.cleanup()

    def read(self, rel):
        with open(os.path.join(self.root, rel), "rb") as f:
            return f.read()

    def test_put_writes_regular_files_and_replaces_them(self):
        workfiles.put_tar(self.root, tar_bytes([("a.txt", b"one"), ("deep/er/b.txt", b"two")], links=[("link", "/etc/passwd")]))
        self.assertEqual(self.read("a.txt"), b"one")
        self.assertEqual(self.read("deep/er/b.txt"), b"two")
        self.assertFalse(os.path.lexists(os.path.join(self.root, "link")))
        workfiles.put_tar(self.root, tar_bytes([("a.txt", b"again")]))
        self.assertEqual(self.read("a.txt"), b"again")

    def test_put_never_writes_through_a_link(self):
        os.symlink(self.outside, os.path.join(self.root, "dir"))
        os.symlink(os.path.join(self.outside, "secret"), os.path.join(self.root, "file"))
        workfiles.put_tar(self.root, tar_bytes([("dir/secret", b"overwritten"), ("file", b"mine")]))
        with open(os.path.join(self.outside, "secret")) as f:
            self.assertEqual(f.read(), "secret")
        self.assertFalse(os.path.islink(os.path.join(self.root, "dir")))
        self.assertEqual(self.read("dir/secret"), b"overwritten")
        self.assertFalse(os.path.islink(os.path.join(self.root, "file")))
        self.assertEqual(self.read("file"), b"mine")

    def test_put_refuses_unsafe_names_and_directories_in_the_way(self):
        for name in ("../escape", "/abs", "a/../../b", "a//b"):
            with self.assertRaises(workfiles.FileError) as e:
                workfiles.put_tar(self.root, tar_bytes([(name, b"x")]))
            self.assertEqual(e.exception.code, "invalid")
        os.mkdir(os.path.join(self.root, "adir"))
        with self.assertRaises(workfiles.FileError):
            workfiles.put_tar(self.root, tar_bytes([("adir", b"x")]))
        with self.assertRaises(workfiles.FileError):
            workfiles.put_tar(self.root, b"not a tar" * 100)
        self.assertEqual(sorted(os.listdir(self.tmp.name)), ["outside", "work"])  # nothing escaped

    def test_get_reads_regular_files_within_the_limit(self):
        workfiles.write_file(self.root, "d/f.bin", b"\x00\x01\x02")
        self.assertEqual(workfiles.read_file(self.root, "d/f.bin", 3), b"\x00\x01\x02")
        with self.assertRaises(workfiles.FileError) as e:
            workfiles.read_file(self.root, "d/f.bin", 2)
        self.assertEqual(e.exception.code, "too_large")
        for missing in ("nope", "d/nope", "d", "d/f.bin/x"):
            with self.assertRaises(workfiles.FileError) as e:
                workfiles.read_file(self.root, missing, 10)
            self.assertEqual(e.exception.code, "not_found", missing)
        with self.assertRaises(workfiles.FileError) as e:
            workfiles.read_file(self.root, "../outside/secret", 10)
        self.assertEqual(e.exception.code, "invalid")

    def test_get_never_follows_a_link(self):
        os.symlink(self.outside, os.path.join(self.root, "dir"))
        os.symlink(os.path.join(self.outside, "secret"), os.path.join(self.root, "file"))
        os.mkfifo(os.path.join(self.root, "fifo"))
        for path in ("dir/secret", "file", "fifo"):
            with self.assertRaises(workfiles.FileError) as e:
                workfiles.read_file(self.root, path, 100)
            self.assertEqual(e.exception.code, "not_found", path)

    def test_list_walks_regular_files_only_in_path_order_within_the_limit(self):
        for rel in ("b.txt", "a/z.txt", "a/b/c.txt"):
            workfiles.write_file(self.root, rel, b"12")
        os.symlink(self.outside, os.path.join(self.root, "dir"))
        os.symlink(os.path.join(self.outside, "secret"), os.path.join(self.root, "file"))
        files, truncated = workfiles.list_files(self.root, 10)
        self.assertEqual([f["path"] for f in files], ["a/b/c.txt", "a/z.txt", "b.txt"])
        self.assertEqual({f["size"] for f in files}, {2})
        self.assertFalse(truncated)
        files, truncated = workfiles.list_files(self.root, 2)
        self.assertEqual(len(files), 2)
        self.assertTrue(truncated)


class CompileTest(unittest.TestCase):
    def test_the_last_expression_is_split_off(self):
        body, last = session.split_last_expression("x = 2\nx * 21", "<call 1>")
        ns = {}
        exec(body, ns)
        self.assertEqual(eval(last, ns), 42)
        body, last = session.split_last_expression("x = 2", "<call 1>")
        self.assertIsNone(last)
        body, last = session.split_last_expression("", "<call 1>")
        self.assertIsNone(last)

    def test_what_does_not_compile_raises(self):
        for bad in ("def (", "a\x00b", "(" * 1000 + ")" * 1000, "'\ud800'"):
            with self.assertRaises(Exception):
                session.split_last_expression(bad, "<call 1>")


class CheckTest(unittest.TestCase):
    def test_outputs_within_the_caps_are_kept_others_counted(self):
        outputs = [
            {"type": "text/plain", "data": "42", "kind": "result"},
            {"type": "image/png", "data": "A" * 16, "kind": "figure"},
            {"type": "text/html", "data": "x" * 11, "kind": "result"},  # over 10 bytes
            {"type": "application/x", "data": "x", "kind": "result"},
            {"type": "text/plain", "data": 3, "kind": "result"},
            "junk",
        ]
        kept, dropped = session.checked_outputs(outputs, 5, 10)
        self.assertEqual([o["type"] for o in kept], ["text/plain", "image/png"])
        self.assertEqual(dropped, 4)
        kept, dropped = session.checked_outputs(outputs[:2], 1, 10)
        self.assertEqual((len(kept), dropped), (1, 1))
        self.assertEqual(session.checked_outputs("junk", 5, 10), ([], 0))

    def test_an_error_is_reduced_to_known_fields(self):
        self.assertIsNone(session.checked_error("x"))
        e = session.checked_error({"type": "E", "message": "m" * 100000, "line": True, "traceback": 3, "extra": 1})
        self.assertEqual(set(e), {"type", "message", "line", "traceback"})
        self.assertIsNone(e["line"])
        self.assertIsNone(e["traceback"])
        self.assertLess(len(e["message"]), 10000)

    def test_caps_are_clamped(self):
        self.assertEqual(session.cap({"a": 5}, "a", 1, 0, 3), 3)
        self.assertEqual(session.cap({"a": True}, "a", 1, 0, 3), 1)
        self.assertEqual(session.cap({}, "a", 2, 0, 3), 2)

    def test_the_archive_must_end_right_after_the_request(self):
        r, w = os.pipe()
        os.write(w, bytes(1024))
        session.read_end_of_archive(r)
        os.write(w, b"\x01" + bytes(1023))
        with self.assertRaises(ValueError):
            session.read_end_of_archive(r)
        os.close(r)
        os.close(w)


class InterpreterTest(unittest.TestCase):
    def test_tracebacks_keep_only_the_calls_frames(self):
        src = "def f():\n    1/0\nf()\n"
        interpreter.remember_source("<call 7>", src)
        saved = sys.stderr
        sys.stderr = io.StringIO()
        try:
            try:
                exec(compile(src, "<call 7>", "exec"), {})
            except BaseException as e:
                error = interpreter.describe(e)
        finally:
            sys.stderr = saved
        self.assertEqual(error["type"], "ZeroDivisionError")
        self.assertEqual(error["line"], 2)
        self.assertIn('File "<call 7>", line 2, in f', error["traceback"])
        self.assertIn("1/0", error["traceback"])
        self.assertNotIn("test_session", error["traceback"])

    def test_source_is_kept_for_the_latest_calls_only(self):
        for i in range(1, interpreter.LINECACHE_CALLS + 5):
            interpreter.remember_source("<call %d>" % i, "x = %d\n" % i)
        import linecache
        kept = [k for k in linecache.cache if isinstance(k, str) and k.startswith("<call ")]
        self.assertEqual(len(kept), interpreter.LINECACHE_CALLS)
        self.assertNotIn("<call 1>", kept)

    def test_a_late_interrupt_is_ignored_outside_the_code(self):
        interpreter._user[0] = False
        interpreter.on_sigint(2, None)  # no KeyboardInterrupt
        interpreter._user[0] = True
        try:
            with self.assertRaises(KeyboardInterrupt):
                interpreter.on_sigint(2, None)
        finally:
            interpreter._user[0] = False

    def test_a_call_result_is_json(self):
        import marshal
        body, last = session.split_last_expression("y = 6\ny * 7", "<call 9>")
        saved = (sys.stdin, sys.stdout, sys.stderr)
        saved_fd0 = os.dup(0)
        try:
            sys.stdout = io.StringIO()
            result = interpreter.run_call({}, {"body": marshal.dumps(body), "last": marshal.dumps(last), "stdin": b"",
                                               "filename": "<call 9>", "source": "y = 6\ny * 7",
                                               "maxOutputs": 10, "maxOutputBytes": 1024})
        finally:
            os.dup2(saved_fd0, 0)
            os.close(saved_fd0)
            sys.stdin, sys.stdout, sys.stderr = saved
        self.assertEqual(result["exitCode"], 0)
        self.assertIsNone(result["error"])
        json.dumps(result)


if __name__ == "__main__":
    unittest.main()
