"""The payload in (a tar archive on stdin) and the returned files out (from /work/out)."""

import base64
import json
import os
import stat
import tarfile

CHUNK = 65536
REQUEST_NAME = ".pybox/request.json"
STDIN_NAME = ".pybox/stdin"
MAX_DEPTH = 16


def safe_member_path(root, name):
    """A relative path below root, or None. The host already checked; checking again is cheap."""
    if not name or "\x00" in name or name.startswith("/") or "\\" in name:
        return None
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts) or len(parts) > MAX_DEPTH:
        return None
    return os.path.join(root, *parts)


def read_payload(stream, root):
    """Unpacks the archive: (request, stdin bytes). Files go below root; links and devices are
    never created, and a file is never written through an existing name."""
    request, stdin_data = None, b""
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if not member.isreg():
                continue  # directories are implied
            src = tar.extractfile(member)
            if member.name == REQUEST_NAME:
                request = json.loads(src.read())
            elif member.name == STDIN_NAME:
                stdin_data = src.read()
            else:
                target = safe_member_path(root, member.name)
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
    if not isinstance(request, dict):
        raise ValueError("payload has no request")
    return request, stdin_data


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
