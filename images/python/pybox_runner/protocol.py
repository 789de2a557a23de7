"""Frames on the runner's stdout (src/engine/protocol.ts has the host's half).

[1 byte kind][4 bytes big-endian length][payload]: 1 = the user's stdout, 2 = the user's stderr,
3 = the final report (JSON), last; 4 = ready (empty), first: the runner waits for its payload;
5 = one test case's end (JSON, cases.case_report), once per case in order, before the report.
In session mode (session.py) there is no report: 6 = a call's end (JSON), 7 = the answer to the
initial payload or to a host frame (JSON). The host's frames on stdin use the same layout."""

import json
import os

KIND_STDOUT, KIND_STDERR, KIND_REPORT, KIND_READY, KIND_CASE = 1, 2, 3, 4, 5
KIND_CALL_END, KIND_REPLY = 6, 7
CHUNK = 65536  # the host refuses larger output frames
REPORT_VERSION = 1


def write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def encode_frame(kind, payload):
    return bytes([kind]) + len(payload).to_bytes(4, "big") + payload


def encode_frames(kind, payload):
    """Output in frames of at most CHUNK bytes."""
    return b"".join(encode_frame(kind, payload[i:i + CHUNK]) for i in range(0, len(payload), CHUNK))


def encode_report(data):
    return encode_frame(KIND_REPORT, json.dumps(data, ensure_ascii=True, separators=(",", ":")).encode())


def decode_frames(data):
    """The frames in a byte string, as (kind, payload): for tests and tools, never on the host."""
    out, i = [], 0
    while i + 5 <= len(data):
        size = int.from_bytes(data[i + 1:i + 5], "big")
        out.append((data[i], data[i + 5:i + 5 + size]))
        i += 5 + size
    return out
