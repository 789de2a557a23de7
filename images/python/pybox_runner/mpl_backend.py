"""The sandbox's matplotlib backend (MPLBACKEND=module://pybox_runner.mpl_backend): Agg, except
that showing a figure keeps it for the result, as a notebook's inline backend does.

plt.show() renders every open figure to PNG (rich.PENDING) and closes it, so each show() after
new plots gives new images; fig.show() does the same for one figure. What a module backend must
provide (matplotlib 3.6, pyplot.switch_backend): FigureCanvas (whose manager_class makes the
figure managers) and show; the rest comes from matplotlib's own defaults. Imported only when the
code draws with pyplot: a run that never does pays nothing for it."""

from matplotlib import _pylab_helpers
from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg

from . import rich

backend_version = "pybox"


class FigureManager(FigureManagerBase):
    def show(self):
        rich.keep_shown([self.canvas.figure])


class FigureCanvas(FigureCanvasAgg):
    manager_class = FigureManager


def show(*args, **kwargs):
    """plt.show(): every open figure, by number. Arguments (block=...) mean nothing here."""
    managers = sorted(_pylab_helpers.Gcf.get_all_fig_managers(), key=lambda m: m.num)
    rich.keep_shown([m.canvas.figure for m in managers])
