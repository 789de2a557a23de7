"""Pages faulted in while a warm gVisor sandbox waits for its job, so the run does not fault them.

Under gVisor a process's first touch of a page is a trip into the sandbox's own kernel, and a fork
makes both processes start over: every private page the runner and the code's process share is
copy-on-write, and the new process has none of its mappings yet. A run's path (reading the payload,
starting the code, relaying, reporting) first-touches a few thousand pages in the two processes,
measured at 5-10 ms of a `print(1)` run. populate() takes those faults ahead of time.

It faults pages in with mlock and unlocks them at once: that populates a range as a write would
(copy-on-write broken, the mapping in place) without writing a byte, so it cannot race the
interpreter or another thread, and a range unmapped meanwhile is an error, not a crash. Less than
one chunk is ever locked, within RLIMIT_MEMLOCK. The stack mapping is left alone (gVisor maps all
of it: populating it would allocate megabytes nobody uses), and so are the kernel's own pages.

Under runc a fault costs the host kernel a microsecond: the runner calls this under gVisor only."""

import ctypes
import os
import resource

SKIPPED = frozenset((b"[stack]", b"[vvar]", b"[vdso]", b"[vsyscall]", b"[vvar_vclock]"))
CHUNK = 1 << 16


def readable_regions(maps):
    """(start, end) of every readable mapping in a /proc/<pid>/maps text, but SKIPPED ones."""
    regions = []
    for line in maps.splitlines():
        fields = line.split()
        if len(fields) < 5 or not fields[1].startswith(b"r"):
            continue
        if len(fields) > 5 and fields[5] in SKIPPED:
            continue
        try:
            start, end = (int(x, 16) for x in fields[0].split(b"-"))
        except ValueError:
            continue
        if end > start:
            regions.append((start, end))
    return regions


def chunk_size(memlock_limit, page):
    """Bytes locked at once: CHUNK, or less under a smaller RLIMIT_MEMLOCK; 0 when not even a page may be."""
    if memlock_limit != resource.RLIM_INFINITY and memlock_limit < CHUNK:
        return memlock_limit // page * page
    return CHUNK


def populate():
    """Faults in this process's readable mappings; the bytes populated (0 when it cannot)."""
    try:
        with open("/proc/self/maps", "rb") as f:
            regions = readable_regions(f.read())
        size = chunk_size(resource.getrlimit(resource.RLIMIT_MEMLOCK)[0], os.sysconf("SC_PAGE_SIZE"))
        libc = ctypes.CDLL(None, use_errno=True)
        lock, unlock = libc.mlock, libc.munlock
    except (OSError, ValueError, AttributeError):
        return 0
    if size == 0:
        return 0
    lock.argtypes = unlock.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    lock.restype = unlock.restype = ctypes.c_int
    done = 0
    for start, end in regions:
        for at in range(start, end, size):
            n = min(size, end - at)
            if lock(at, n) == 0:
                unlock(at, n)
                done += n
    return done
