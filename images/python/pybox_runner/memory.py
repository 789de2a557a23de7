"""The kernel's own memory accounting of the sandbox, as the container sees it.

Under runc the container's memory cgroup is visible at /sys/fs/cgroup/memory (cgroup v1) or
/sys/fs/cgroup (v2). Its OOM-kill counter is the only reliable sign that the memory limit was hit:
the kernel raises it when it kills a process for the limit, and nothing else does. Under gVisor the
files are gVisor's own (no OOM counter): there the host kills the whole sandbox, and only the engine
can tell (the host decides from its state)."""

import os

V1 = "/sys/fs/cgroup/memory"
V2 = "/sys/fs/cgroup"


def parse_flat_keyed(text):
    """`key value` lines (memory.oom_control, memory.events) as a dict of ints."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def parse_int(text):
    text = text.strip()
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _read(path):
    try:
        with open(path) as f:
            return f.read(4096)
    except OSError:
        return None


def memory_accounting(v1=V1, v2=V2):
    """{"oomKills", "failcnt", "peakBytes", "limitBytes"} from the container's memory cgroup, or
    None where there is no OOM counter to read (gVisor)."""
    control = _read(os.path.join(v1, "memory.oom_control"))
    if control is not None:
        kills = parse_flat_keyed(control).get("oom_kill")
        if kills is None:
            return None  # a kernel older than 4.13 has no counter: no evidence either way
        failcnt = _read(os.path.join(v1, "memory.failcnt"))
        peak = _read(os.path.join(v1, "memory.max_usage_in_bytes"))
        limit = _read(os.path.join(v1, "memory.limit_in_bytes"))
        return {
            "oomKills": kills,
            "failcnt": parse_int(failcnt) if failcnt is not None else None,
            "peakBytes": parse_int(peak) if peak is not None else None,
            "limitBytes": parse_int(limit) if limit is not None else None,
        }
    events = _read(os.path.join(v2, "memory.events"))
    if events is not None:
        e = parse_flat_keyed(events)
        if "oom_kill" not in e:
            return None
        peak = _read(os.path.join(v2, "memory.peak"))
        limit = _read(os.path.join(v2, "memory.max"))
        return {
            "oomKills": e["oom_kill"],
            "failcnt": e.get("max"),
            "peakBytes": parse_int(peak) if peak is not None else None,
            "limitBytes": parse_int(limit) if limit is not None else None,
        }
    return None


def since(before, after):
    """The OOM kills after a baseline: a kill while preloading (the sandbox then started a lean
    process) is not the code's."""
    if after is None:
        return None
    out = dict(after)
    base = (before or {}).get("oomKills")
    if isinstance(base, int) and isinstance(out.get("oomKills"), int):
        out["oomKills"] = max(0, out["oomKills"] - base)
    return out


def clamp_counts(acc):
    """Keeps the report within the host's schema whatever the files said."""
    if acc is None:
        return None
    out = {}
    for k in ("oomKills", "failcnt", "peakBytes", "limitBytes"):
        v = acc.get(k)
        out[k] = v if isinstance(v, int) and 0 <= v < 2 ** 53 else None
    return out
