"""Rich outputs: figures drawn with matplotlib, and a value displayed as a notebook shows it.

Runs in the code's own process (it is the code's interpreter that holds the figures), so whatever
it returns is as hostile as the code's output: the host checks type, encoding and size again.

Each output is a dict {"type": "image/png" | "text/plain" | "text/html" | "text/markdown",
"data": str (base64 for images), "kind": "figure" | "result"}.

Nothing here imports matplotlib: a run that never imported matplotlib.pyplot pays nothing. The
backend (mpl_backend.py, named by MPLBACKEND) calls keep_shown() from plt.show()."""

import atexit
import base64
import io
import json
import sys

# Figures shown with plt.show() during a run wait here (as PNG bytes) until the run's end collects them.
PENDING = []
# A figure is rendered only up to this many pixels (3650 x 2740, or 12 x 8 inches at 300 dpi; at
# matplotlib's default 100 dpi, 36 x 27 inches). Drawing and encoding take some 8 bytes a pixel at
# their peak: measured in a 256 MB sandbox with numpy and pandas loaded, 16 MP peaked at 210 MB and
# 36 MP was killed for memory, after the code itself had finished.
MAX_PIXELS = 10_000_000
# The output types the host accepts: the runner drops anything else the code's process reports.
OUTPUT_TYPES = ("image/png", "text/plain", "text/html", "text/markdown")
# Room for one output's type and kind around its data on the wire (JSON).
OUTPUT_OVERHEAD = 256
_state = {
    # How many figures show() keeps, and how large each may be; more or larger are only counted.
    # child.py sets them from the request's caps (0 in a test case's run: nothing is kept).
    "keep": 20,
    "max_bytes": 2 * 1024 * 1024,
    # Figures show() could not keep (over the caps, or failing to render) since the last capture.
    "dropped": 0,
}


def configure(max_count, max_bytes):
    """The caps show() keeps figures within until the run's end (or a session call's) collects them."""
    _state["keep"] = max(0, int(max_count))
    _state["max_bytes"] = max(0, int(max_bytes))


def caps_of(caps):
    """(most outputs, most bytes of one) from a request's caps (maxOutputs, maxOutputBytes); 0 for
    what is absent or not a positive count."""
    caps = caps if isinstance(caps, dict) else {}
    values = []
    for key in ("maxOutputs", "maxOutputBytes"):
        value = caps.get(key, 0)
        values.append(value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0)
    return tuple(values)


def wire_limit(max_count, max_bytes):
    """The most bytes the outputs may take as JSON: each one's data at most as long as max_bytes
    in base64 (texts are held to that too), plus its type and kind."""
    return max(0, int(max_count)) * (encoded_limit(max_bytes) + OUTPUT_OVERHEAD)


def encoded_limit(max_bytes):
    return 4 * ((max(0, int(max_bytes)) + 2) // 3)


def render_png(fig):
    """The figure as PNG bytes at its own dpi; raises when it cannot be drawn or is far too large."""
    width, height = fig.get_size_inches() * fig.dpi
    if not (width * height <= MAX_PIXELS):  # also catches NaN
        raise ValueError("figure too large to render: %r x %r pixels" % (width, height))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return buf.getvalue()


def _close(plt, fig):
    try:
        plt.close(fig)
    except BaseException:
        pass


def keep_shown(figures):
    """plt.show() (or fig.show()): renders each figure into PENDING within the caps and closes it,
    as a notebook does, so that the next plot starts on a fresh figure."""
    plt = sys.modules.get("matplotlib.pyplot")
    for fig in figures:
        try:
            if len(PENDING) >= _state["keep"]:
                _state["dropped"] += 1
                continue
            png = render_png(fig)
            if len(png) > _state["max_bytes"]:
                _state["dropped"] += 1
            else:
                PENDING.append(png)
        except BaseException:
            _state["dropped"] += 1
        finally:
            if plt is not None:
                _close(plt, fig)


def open_figures(plt):
    """The figures pyplot still holds, by number."""
    try:
        nums = list(plt.get_fignums())
    except BaseException:
        return []
    figures = []
    for num in nums:
        try:
            figures.append(plt.figure(num))
        except BaseException:
            pass
    return figures


def keep_open_at_exit():
    """matplotlib closes every figure at exit (an atexit handler of its own): the figures still open
    when the code ends are the run's too, so that handler is taken out before the exit handlers run
    (capture_figures closes them afterwards). Imports nothing."""
    helpers = sys.modules.get("matplotlib._pylab_helpers")
    if helpers is None:
        return
    try:
        atexit.unregister(helpers.Gcf.destroy_all)
    except BaseException:
        pass


def capture_figures(max_count, max_bytes):
    """The figures shown during the run (PENDING) and those still open, as PNG outputs, closing
    them all; (outputs, dropped) where dropped counts figures over the caps. Imports nothing: with
    matplotlib.pyplot never imported there is nothing to capture."""
    max_count, max_bytes = max(0, int(max_count)), max(0, int(max_bytes))
    pending = list(PENDING)
    del PENDING[:]
    outputs, dropped = [], _state["dropped"]
    _state["dropped"] = 0

    def add(png):
        nonlocal dropped
        if len(outputs) >= max_count or not isinstance(png, bytes) or len(png) > max_bytes:
            dropped += 1
        else:
            outputs.append({"type": "image/png", "data": base64.b64encode(png).decode("ascii"), "kind": "figure"})

    for png in pending:
        add(png)
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        for fig in open_figures(plt):
            try:
                if len(outputs) >= max_count:
                    dropped += 1  # not drawn at all: it could not be returned
                else:
                    add(render_png(fig))
            except BaseException:
                dropped += 1
            finally:
                _close(plt, fig)
    return outputs, dropped


def _text_of(value):
    """A str as UTF-8 can carry it (lone surrogates replaced), or None for anything else."""
    if not isinstance(value, str):
        return None
    return value.encode("utf-8", "replace").decode("utf-8")


def _fits(text, max_bytes):
    """Within max_bytes in UTF-8, and within the wire's room once escaped as JSON."""
    return len(text.encode("utf-8")) <= max_bytes and len(json.dumps(text, ensure_ascii=True)) <= encoded_limit(max_bytes) + 2


def clip_text(text, max_bytes):
    """Head and tail of a long text within max_bytes (UTF-8 and escaped for the wire), or None
    when not even the marker fits."""
    if _fits(text, max_bytes):
        return text
    budget = max_bytes
    while budget > 64:
        budget = budget * 3 // 4
        half = budget // 2
        cut = text[:half] + "\n... [%d characters cut] ...\n" % (len(text) - 2 * half) + text[-half:]
        if _fits(cut, max_bytes):
            return cut
    return None


def _method(value, name):
    """A notebook's display method as the object's class defines it: looked up on the type, so an
    instance's __getattr__ that answers every name is not taken for one, and a class is never
    displayed through its own (unbound) method."""
    if isinstance(value, type):
        return None
    try:
        method = getattr(type(value), name, None)
    except BaseException:
        return None
    return method if callable(method) else None


def display_outputs(value, max_bytes):
    """A call's last expression value as a notebook displays it: text/plain (repr), and text/html
    or text/markdown when the object provides _repr_html_ / _repr_markdown_; (outputs, dropped)."""
    if value is None:
        return [], 0
    max_bytes = max(0, int(max_bytes))
    outputs, dropped = [], 0
    try:
        plain = _text_of(repr(value))
    except BaseException:
        plain = None
    if plain is not None:
        plain = clip_text(plain, max_bytes)
    if plain is None:
        dropped += 1
    else:
        outputs.append({"type": "text/plain", "data": plain, "kind": "result"})
    for name, kind in (("_repr_html_", "text/html"), ("_repr_markdown_", "text/markdown")):
        method = _method(value, name)
        if method is None:
            continue
        try:
            text = _text_of(method(value))
        except BaseException:
            dropped += 1
            continue
        if text is None:
            continue  # None is how an object says it has no such form (pandas, by its options)
        if _fits(text, max_bytes):
            outputs.append({"type": kind, "data": text, "kind": "result"})
        else:
            dropped += 1  # cut HTML or Markdown would not render: the text/plain form stands
    return outputs, dropped
