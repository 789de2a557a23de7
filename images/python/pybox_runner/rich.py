"""Rich outputs: figures drawn with matplotlib, and a value displayed as a notebook shows it.

Runs in the code's own process (it is the code's interpreter that holds the figures), so whatever
it returns is as hostile as the code's output: the host checks type, encoding and size again.

Each output is a dict {"type": "image/png" | "text/plain" | "text/html" | "text/markdown",
"data": str (base64 for images), "kind": "figure" | "result"}."""

# Figures shown with plt.show() during a run wait here until the run's end collects them.
PENDING = []


def capture_figures(max_count, max_bytes):
    """The figures shown during the run (PENDING) and those still open, as PNG outputs, closing
    them all; (outputs, dropped) where dropped counts figures over the caps. Imports nothing: with
    matplotlib.pyplot never imported there is nothing to capture."""
    return [], 0


def display_outputs(value, max_bytes):
    """A call's last expression value as a notebook displays it: text/plain (repr), and text/html
    or text/markdown when the object provides _repr_html_ / _repr_markdown_; (outputs, dropped)."""
    return [], 0
