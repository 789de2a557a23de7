"""The payload in (a tar archive on stdin) and the returned files out (from /work/out)."""

import base64
import json
import os
import stat
import tarfile

CHUNK = 65536
REQUEST_NAME = ".pybox/request.json"
STDIN_NAME = ".pybox/stdin"
CASES_PREFIX = ".pybox/cases/"  # <index>/stdin and <index>/files/<path>: a test case's own input
MAX_CASES = 10000
MAX_DEPTH = 16


def safe_member_path(root, name):
    """A relative path below root, or None. The host already checked; checking again is cheap."""
    if not name or "\x00" in name or name.startswith("/") or "\\" in name:
        return None
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts) or len(parts) > MAX_DEPTH:
        return None
    return os.path.join(root, *parts)


class Kept:
    """A test-case payload, held in the runner's memory: /work is wiped and refilled for every case,
    and no case may find another case's input anywhere on disk."""

    def __init__(self, count):
        self.main = b""
        self.files = []  # [(relative path, bytes)] of the execution, for every case
        self.cases = [{"stdin": b"", "files": []} for _ in range(count)]

    def take(self, name, data):
        """Keeps one archive entry; False for a name that is not part of a test payload."""
        if name == "main.py":
            self.main = data
            return True
        if not name.startswith(CASES_PREFIX):
            if name.startswith(".pybox/") or safe_member_path("/", name) is None:
                return False
            self.files.append((name, data))
            return True
        index, _, rest = name[len(CASES_PREFIX):].partition("/")
        if not index.isdigit() or int(index) >= len(self.cases):
            return False
        case = self.cases[int(index)]
        if rest == "stdin":
            case["stdin"] = data
            return True
        if rest.startswith("files/") and safe_member_path("/", rest[len("files/"):]) is not None:
            case["files"].append((rest[len("files/"):], data))
            return True
        return False

    def case_files(self, index):
        """What a case's work directory holds besides main.py: the execution's files, then the
        case's own over them (a case's file wins over the execution's file of the same path)."""
        merged = {}
        for path, data in self.files + self.cases[index]["files"]:
            merged[path] = data
        return sorted(merged.items())


def test_count(request):
    """How many test cases a request names: 0 for an ordinary run."""
    tests = request.get("tests") if isinstance(request, dict) else None
    if tests is None:
        return 0
    if not isinstance(tests, list) or not 0 < len(tests) <= MAX_CASES:
        raise ValueError("tests is not a list of 1 to %d cases" % MAX_CASES)
    return len(tests)


def read_payload(stream, root, kept_out=None):
    """Unpacks the archive: (request, stdin bytes). Files go below root; links and devices are
    never created, and a file is never written through an existing name.

    A request with tests (it comes first in the archive) keeps every entry in memory instead: in
    kept_out[0], a Kept, when kept_out is a list (nothing is written to root then)."""
    request, stdin_data, kept = None, b"", None
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if not member.isreg():
                continue  # directories are implied
            src = tar.extractfile(member)
            if member.name == REQUEST_NAME:
                request = json.loads(src.read())
                count = test_count(request)
                if count and kept_out is None:
                    raise ValueError("a payload with tests needs a place to keep them")
                if count:
                    kept = Kept(count)
                    kept_out.append(kept)
            elif member.name == STDIN_NAME:
                stdin_data = src.read()
            elif kept is not None:
                kept.take(member.name, src.read())
            else:
                target = safe_member_path(root, member.name)
                if target is None:
                    continue
                write_new_file(target, src)
    if not isinstance(request, dict):
        raise ValueError("payload has no request")
    return request, stdin_data


def write_new_file(target, src):
    """A new file at target (never through an existing name), with src's bytes (a stream or bytes)."""
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as f:
        if isinstance(src, bytes):
            f.write(src)
            return
        while True:
            block = src.read(CHUNK)
            if not block:
                break
            f.write(block)


def make_out_dir(out_dir):
    """out/ exists before the code runs, so `savefig('out/plot.png')` works without a makedirs.
    A payload file named `out` wins: the code asked for it."""
    try:
        os.mkdir(out_dir, 0o755)
    except FileExistsError:
        pass
    except OSError:
        pass


def collect_out_files(out_dir, max_count, max_bytes):
    """Regular files below out_dir, in name order, within the caps: (files, dropped count)."""
    files, dropped, total = [], 0, 0
    if not os.path.isdir(out_dir) or os.path.islink(out_dir):
        return files, dropped
    for root, dirs, names in os.walk(out_dir, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(root, name)
            rel = os.path.relpath(full, out_dir)
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
                fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
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
