"""Pure helpers that shape what a report says about the code: clipping, exit codes, syntax errors."""

SOURCE_WINDOW = 240  # characters of a long source line shown around a syntax error
MESSAGE_LIMIT = 8192  # characters of an exception message kept in the report
TRACEBACK_LIMIT = 32768  # characters of a traceback kept in the report


def clip(text, limit):
    """Head and tail of a long text, so a report stays small whatever the code raised."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + "\n... [%d characters cut] ...\n" % (len(text) - 2 * half) + text[-half:]


def safe_str(e):
    try:
        return str(e)
    except BaseException:
        return "<exception str() failed>"


def exit_code_of(code, write_err=None):
    """The process exit code a SystemExit's code gives, as the interpreter computes it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    if write_err is not None:
        try:
            write_err(str(code) + "\n")
        except BaseException:
            pass
    return 1


def syntax_error_info(err):
    line = err.lineno or None
    text = (err.text or "").rstrip("\n")
    col = err.offset or None
    caret = None
    if len(text) > SOURCE_WINDOW:
        # A very long line: show the part around the error, and keep the caret under it.
        start = max(0, min((col or 1) - 1 - SOURCE_WINDOW // 2, len(text) - SOURCE_WINDOW))
        text = text[start:start + SOURCE_WINDOW]
        col = (col - start) if col else None
    if text and col:
        # offset counts characters from 1; keep the line's own indentation (tabs included).
        stripped = text.lstrip()
        indent = len(text) - len(stripped)
        caret = "".join(ch if ch == "\t" else " " for ch in text[: max(col - 1, 0)]) + "^"
        if indent:
            text, caret = stripped, caret[indent:]
    return {
        "type": type(err).__name__,
        "message": err.msg or str(err),
        "line": line,
        "column": col,
        "text": text or None,
        "caret": caret,
    }


def render_error_info(info, located=True):
    """The error as Python prints it on stderr: with its place for a syntax error."""
    if not located:
        return "%s: %s\n" % (info["type"], info["message"])
    return '  File "main.py", line %s\n    %s\n    %s\n%s: %s\n' % (
        info["line"], info["text"] or "", info["caret"] or "", info["type"], info["message"])


def compile_error_info(e):
    """A SyntaxError, or a ValueError (source holding a NUL byte), as the report's error."""
    if isinstance(e, SyntaxError):
        return syntax_error_info(e)
    return {"type": type(e).__name__, "message": safe_str(e), "line": None, "column": None,
            "text": None, "caret": None}


def user_frames(tb, filename="main.py"):
    """Drop the runner's own frames from the top of a traceback."""
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    return tb


def last_user_line(tb, filename="main.py"):
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def exception_type_name(kind):
    return kind.__name__ if kind.__module__ == "builtins" else kind.__module__ + "." + kind.__qualname__
