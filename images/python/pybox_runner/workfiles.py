"""A session's work directory as the host reaches it: put (a tar), get (one file), list.

The runner does this with the code's own uid while the code's processes may live and change the
directory under it: every path is walked one component at a time from the work directory's
descriptor, never following a link (a link the code made to /proc/1/fd or anywhere else is
refused or replaced, never gone through), and nothing is read that is not a regular file."""

import errno
import io
import json
import os
import stat
import tarfile

from .payload import safe_member_path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
MAX_DEPTH = 16
MAX_LIST = 10000
# Directory entries a listing looks at, at most: the code can make millions of them.
VISIT_LIMIT = 100000
CHUNK = 1 << 20
LIST_BYTES = 4 << 20


class FileError(Exception):
    """An answer to the host that is not ok: code not_found | too_large | invalid."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def split_path(path):
    if not isinstance(path, str) or safe_member_path("/", path) is None:
        raise FileError("invalid", "not a relative path inside the work directory")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise FileError("invalid", "the path is not valid text")
    return path.split("/")


def open_dir_at(dfd, name):
    """A descriptor of the directory name in dfd, only if name is a directory itself. gVisor
    (20221219) follows a link on open(O_DIRECTORY | O_NOFOLLOW): what was opened must be what
    lstat saw, a directory of this file system."""
    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(errno.ELOOP if stat.S_ISLNK(st.st_mode) else errno.ENOTDIR, "not a directory", name)
    fd = os.open(name, DIR_FLAGS, dir_fd=dfd)
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise OSError(errno.ELOOP, "changed while it was opened", name)
    return fd


def open_dirs(root, parts, create=False):
    """A descriptor of root/parts[0]/.../parts[-1], each component a real directory. With create,
    missing ones are made and a file or link in the way is replaced by a directory."""
    fd = os.open(root, DIR_FLAGS)
    try:
        for part in parts:
            try:
                nfd = open_dir_at(fd, part)
            except OSError as e:
                if not create or e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    raise
                if e.errno != errno.ENOENT:
                    os.unlink(part, dir_fd=fd)
                os.mkdir(part, 0o755, dir_fd=fd)
                nfd = open_dir_at(fd, part)
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def write_file(root, path, data):
    """root/path holds data: a file, link or fifo of that name is replaced; a directory is not."""
    parts = split_path(path)
    try:
        dfd = open_dirs(root, parts[:-1], create=True)
    except OSError as e:
        raise FileError("invalid", "%s: cannot make its directory (%s)" % (path, e.strerror))
    try:
        name = parts[-1]
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise FileError("invalid", "%s is a directory" % path)
        try:
            if st is not None:
                os.unlink(name, dir_fd=dfd)
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dfd)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except OSError as e:
            raise FileError("too_large" if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) else "invalid",
                            "%s: %s" % (path, e.strerror))
    finally:
        os.close(dfd)


def put_tar(root, data):
    """Writes the regular files of a tar (in memory) into root. Raises FileError on the first file
    that cannot be written (those before it are written)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                if not member.isreg():
                    continue
                src = tar.extractfile(member)
                write_file(root, member.name, src.read() if src is not None else b"")
    except tarfile.TarError as e:
        raise FileError("invalid", "the files are not a valid archive: %s" % e)


def read_file(root, path, max_bytes):
    """The bytes of the regular file root/path, at most max_bytes (else too_large)."""
    parts = split_path(path)
    try:
        dfd = open_dirs(root, parts[:-1])
    except OSError:
        raise FileError("not_found", "no such file")
    try:
        try:
            seen = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
            if not stat.S_ISREG(seen.st_mode):
                raise FileError("not_found", "not a regular file")
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dfd)
        except OSError:
            raise FileError("not_found", "no such file")
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (seen.st_dev, seen.st_ino):
            raise FileError("not_found", "not a regular file")
        if st.st_size > max_bytes:
            raise FileError("too_large", "the file has %d bytes, over the limit of %d" % (st.st_size, max_bytes))
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(CHUNK, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise FileError("too_large", "the file is over the limit of %d bytes" % max_bytes)
        return b"".join(chunks)
    finally:
        os.close(fd)


def list_files(root, limit):
    """([{path, size}] of the regular files below root in path order, truncated). Links are not
    followed; names that are not valid text, and what lies deeper than MAX_DEPTH, are left out.
    The answer stays under LIST_BYTES of JSON whatever names the code made."""
    limit = max(0, min(int(limit), MAX_LIST))
    files, truncated, budget = [], False, VISIT_LIMIT
    stack = [[]]
    while stack:
        parts = stack.pop()
        try:
            fd = open_dirs(root, parts)
        except OSError:
            continue  # changed meanwhile
        entries = []
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    budget -= 1
                    if budget < 0:
                        truncated = True
                        break
                    try:
                        entries.append((entry.name, entry.stat(follow_symlinks=False)))
                    except OSError:
                        pass
        except OSError:
            pass
        finally:
            os.close(fd)
        subdirs = []
        for name, st in entries:
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                continue
            if stat.S_ISREG(st.st_mode):
                files.append({"path": "/".join(parts + [name]), "size": st.st_size})
            elif stat.S_ISDIR(st.st_mode) and len(parts) + 1 < MAX_DEPTH:
                subdirs.append(name)
        if len(files) > limit:
            truncated = True
        for name in sorted(subdirs, reverse=True):
            stack.append(parts + [name])
        if budget < 0:
            break
    files.sort(key=lambda f: f["path"])
    if len(files) > limit:
        truncated = True
        files = files[:limit]
    size = 0
    for i, f in enumerate(files):
        size += len(json.dumps(f["path"])) + 32
        if size > LIST_BYTES:
            return files[:i], True
    return files, truncated
