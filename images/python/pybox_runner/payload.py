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
BLOCK = 512
MAX_REQUEST_BYTES = 64 << 20
MAX_DEPTH = 16


def safe_member_path(root, name):
    """A relative path below root, or None. The host already checked; checking again is cheap."""
    if not name or "\x00" in name or name.startswith("/") or "\\" in name:
        return None
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts) or len(parts) > MAX_DEPTH:
        return None
    return os.path.join(root, *parts)


def test_count(request):
    """How many test cases a request names: 0 for an ordinary run."""
    tests = request.get("tests") if isinstance(request, dict) else None
    if tests is None:
        return 0
    if not isinstance(tests, list) or not 0 < len(tests) <= MAX_CASES:
        raise ValueError("tests is not a list of 1 to %d cases" % MAX_CASES)
    return len(tests)


def read_exactly(fd, n):
    chunks, left = [], n
    while left > 0:
        chunk = os.read(fd, min(left, CHUNK))
        if not chunk:
            raise ValueError("the payload ended early")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_request(fd):
    """The archive's first entry, .pybox/request.json, read by hand to its last block and not a byte
    further: with test cases the rest is read by another process (read_cases), so no case's input
    ever passes through the runner's memory."""
    header = read_exactly(fd, BLOCK)
    name = header[:100].split(b"\0", 1)[0]
    kind = header[156:157]
    if name != REQUEST_NAME.encode() or header[345:346] not in (b"\0", b"") or kind not in (b"0", b"\0"):
        raise ValueError("the payload does not start with its request")
    try:
        size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        raise ValueError("the request's size is not a number")
    if not 0 < size <= MAX_REQUEST_BYTES:
        raise ValueError("the request is %d bytes" % size)
    data = read_exactly(fd, -(-size // BLOCK) * BLOCK)[:size]
    request = json.loads(data)
    if not isinstance(request, dict):
        raise ValueError("payload has no request")
    return request


def read_rest(stream, root):
    """The rest of an ordinary run's archive (after read_request): stdin bytes; files go below root;
    links and devices are never created, and a file is never written through an existing name."""
    stdin_data = b""
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if not member.isreg():
                continue  # directories are implied
            src = tar.extractfile(member)
            if member.name == STDIN_NAME:
                stdin_data = src.read()
                continue
            target = safe_member_path(root, member.name)
            if target is not None:
                write_new_file(target, src)
    return stdin_data


def read_cases(stream, count, store_fd):
    """The rest of a test-case archive, read in a process of its own that exits before any case
    runs: everything goes into the store (a memory file the runner and each case's process
    inherit), and its index is returned:
    {"main": [offset, size], "files": [[path, offset, size]], "cases": [[offset, size]]}.

    A case's blob holds what only that case may see (its args, stdin and files): one JSON line
    {"args": [...], "stdin": size, "files": [[path, size]]}, then the bytes in that order. Only the
    case's own process reads it (case_blob)."""
    pos = [0]

    def put(data):
        offset = pos[0]
        view = memoryview(data)
        while view:
            n = os.pwrite(store_fd, view, pos[0])
            view = view[n:]
            pos[0] += n
        return [offset, len(data)]

    index = {"main": [0, 0], "files": [], "cases": []}
    cases = [{"args": [], "stdin": b"", "files": []} for _ in range(count)]
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if not member.isreg():
                continue
            name = member.name
            data = tar.extractfile(member).read()
            if name == "main.py":
                index["main"] = put(data)
            elif name.startswith(CASES_PREFIX):
                number, _, rest = name[len(CASES_PREFIX):].partition("/")
                if not number.isdigit() or int(number) >= count:
                    continue
                case = cases[int(number)]
                if rest == "stdin":
                    case["stdin"] = data
                elif rest == "args":
                    args = json.loads(data)
                    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
                        raise ValueError("a test case's args are not a list of strings")
                    case["args"] = args
                elif rest.startswith("files/") and safe_member_path("/", rest[len("files/"):]) is not None:
                    case["files"].append((rest[len("files/"):], data))
            elif not name.startswith(".pybox/") and safe_member_path("/", name) is not None:
                index["files"].append([name] + put(data))
    for case in cases:
        head = json.dumps({"args": case["args"], "stdin": len(case["stdin"]),
                           "files": [[p, len(d)] for p, d in case["files"]]}).encode() + b"\n"
        index["cases"].append(put(b"".join([head, case["stdin"]] + [d for _, d in case["files"]])))
    return index


def case_blob(store_fd, ref):
    """(args, stdin bytes, [(path, bytes)]) of one case, read from the store by its own process."""
    blob = store_read(store_fd, ref)
    if len(blob) != ref[1]:
        raise ValueError("a test case's input is cut short")
    head, _, body = blob.partition(b"\n")
    meta = json.loads(head)
    stdin_size = int(meta["stdin"])
    stdin_data, at, files = body[:stdin_size], stdin_size, []
    for path, n in meta["files"]:
        files.append((path, body[at:at + int(n)]))
        at += int(n)
    return meta["args"], stdin_data, files


def store_read(store_fd, ref):
    offset, size = ref
    return os.pread(store_fd, size, offset) if size else b""


def write_new_file(target, src):
    """A new file at target (never through an existing name), with src's bytes (a stream or bytes)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        fd = os.open(target, flags, 0o644)
    except FileNotFoundError:
        # Its directory is new (most files go straight into /work, which is there: under gVisor
        # every look-up of a path costs, so the directories are made only when needed).
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        fd = os.open(target, flags, 0o644)
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
