"""Rich outputs (rich.py, mpl_backend.py) and how they travel on the result pipe (child, main, relay).

The parts that need matplotlib run where it is installed (the sandbox image: the integration test
test/integration/rich-outputs.test.ts runs this file there); on a host without it they are skipped,
and a fake pyplot stands in for the rest."""

import base64
import importlib.util
import json
import os
import sys
import types
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pybox_runner import child, main, relay, rich  # noqa: E402

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class FakeFigure:
    def __init__(self, png=PNG_SIGNATURE + b"fake", inches=(6.4, 4.8), dpi=100.0, fails=False):
        self.png, self.inches, self.dpi, self.fails = png, inches, dpi, fails
        self.rendered = 0

    def get_size_inches(self):
        return FakeSize(self.inches)

    def savefig(self, buf, format=None, dpi=None):
        self.rendered += 1
        if self.fails:
            raise RuntimeError("this figure cannot be drawn")
        buf.write(self.png)


class FakeSize(tuple):
    def __mul__(self, k):
        return FakeSize(v * k for v in self)


class FakePyplot(types.ModuleType):
    """What capture_figures uses of matplotlib.pyplot: figure numbers, figures, close."""

    def __init__(self, figures):
        super().__init__("matplotlib.pyplot")
        self.figures = dict(enumerate(figures, start=1))
        self.closed = []

    def get_fignums(self):
        return sorted(self.figures)

    def figure(self, num):
        return self.figures[num]

    def close(self, fig):
        self.closed.append(fig)
        for num, f in list(self.figures.items()):
            if f is fig:
                del self.figures[num]


class RichTestCase(unittest.TestCase):
    def setUp(self):
        del rich.PENDING[:]
        rich._state["dropped"] = 0
        rich.configure(20, 2 * 1024 * 1024)
        self.saved_pyplot = sys.modules.get("matplotlib.pyplot")

    def tearDown(self):
        del rich.PENDING[:]
        rich._state["dropped"] = 0
        if self.saved_pyplot is None:
            sys.modules.pop("matplotlib.pyplot", None)
        else:
            sys.modules["matplotlib.pyplot"] = self.saved_pyplot

    def fake_pyplot(self, figures):
        plt = FakePyplot(figures)
        sys.modules["matplotlib.pyplot"] = plt
        return plt


class CaptureTest(RichTestCase):
    @unittest.skipIf(HAS_MATPLOTLIB, "only where matplotlib is not installed")
    def test_nothing_is_imported_without_pyplot(self):
        before = set(sys.modules)
        self.assertEqual(rich.capture_figures(10, 1000), ([], 0))
        rich.keep_open_at_exit()
        self.assertEqual(set(sys.modules) - before, set())

    def test_shown_figures_come_first_then_open_ones_and_all_are_closed(self):
        rich.PENDING.append(PNG_SIGNATURE + b"shown")
        a, b = FakeFigure(PNG_SIGNATURE + b"a"), FakeFigure(PNG_SIGNATURE + b"b")
        plt = self.fake_pyplot([a, b])
        outputs, dropped = rich.capture_figures(10, 1000)
        self.assertEqual(dropped, 0)
        self.assertEqual([base64.b64decode(o["data"]) for o in outputs], [PNG_SIGNATURE + b"shown", PNG_SIGNATURE + b"a", PNG_SIGNATURE + b"b"])
        self.assertTrue(all(o["type"] == "image/png" and o["kind"] == "figure" for o in outputs))
        self.assertEqual(plt.closed, [a, b])
        self.assertEqual(rich.PENDING, [])
        self.assertEqual(rich.capture_figures(10, 1000), ([], 0))  # collected once only

    def test_a_broken_figure_is_dropped_and_counted_and_the_rest_kept(self):
        good, bad = FakeFigure(), FakeFigure(fails=True)
        plt = self.fake_pyplot([bad, good])
        outputs, dropped = rich.capture_figures(10, 1000)
        self.assertEqual((len(outputs), dropped), (1, 1))
        self.assertEqual(plt.closed, [bad, good])

    def test_caps_on_count_and_size(self):
        big = FakeFigure(PNG_SIGNATURE + b"x" * 2000)
        small = [FakeFigure() for _ in range(4)]
        plt = self.fake_pyplot([big] + small)
        outputs, dropped = rich.capture_figures(2, 1000)
        # The big one is drawn and dropped; past the count, figures are not even drawn.
        self.assertEqual((len(outputs), dropped), (2, 3))
        self.assertEqual([f.rendered for f in small], [1, 1, 0, 0])
        self.assertEqual(len(plt.closed), 5)

    def test_an_enormous_figure_is_not_drawn(self):
        huge = FakeFigure(inches=(1000, 1000), dpi=100)
        nan = FakeFigure(inches=(float("nan"), 1), dpi=100)
        self.fake_pyplot([huge, nan])
        self.assertEqual(rich.capture_figures(10, 10 ** 9), ([], 2))
        self.assertEqual((huge.rendered, nan.rendered), (0, 0))

    def test_zero_caps_count_without_drawing(self):
        fig = FakeFigure()
        self.fake_pyplot([fig])
        rich.PENDING.append(PNG_SIGNATURE)
        self.assertEqual(rich.capture_figures(0, 1000), ([], 2))
        self.assertEqual(fig.rendered, 0)

    def test_show_keeps_within_its_caps(self):
        plt = self.fake_pyplot([])
        rich.configure(1, 100)
        figs = [FakeFigure(), FakeFigure(PNG_SIGNATURE + b"y" * 200), FakeFigure(fails=True), FakeFigure()]
        rich.keep_shown(figs)
        self.assertEqual(len(rich.PENDING), 1)
        self.assertEqual(plt.closed, figs)
        self.assertEqual(rich.capture_figures(1, 100)[1], 3)

    def test_hostile_pyplot_does_not_break_capture(self):
        plt = self.fake_pyplot([])

        def boom():
            raise KeyboardInterrupt

        plt.get_fignums = boom
        self.assertEqual(rich.capture_figures(5, 1000), ([], 0))

    def test_caps_of_and_wire_limit(self):
        self.assertEqual(rich.caps_of({"maxOutputs": 3, "maxOutputBytes": 99}), (3, 99))
        self.assertEqual(rich.caps_of({"maxOutputs": True, "maxOutputBytes": -1}), (0, 0))
        self.assertEqual(rich.caps_of(None), (0, 0))
        self.assertEqual(rich.wire_limit(2, 3), 2 * (4 + rich.OUTPUT_OVERHEAD))


class DisplayTest(RichTestCase):
    def test_plain_repr(self):
        self.assertEqual(rich.display_outputs(42, 1000), ([{"type": "text/plain", "data": "42", "kind": "result"}], 0))

    def test_none_shows_nothing(self):
        self.assertEqual(rich.display_outputs(None, 1000), ([], 0))

    def test_a_raising_repr_is_dropped_not_raised(self):
        class Bad:
            def __repr__(self):
                raise SystemExit(3)

        self.assertEqual(rich.display_outputs(Bad(), 1000), ([], 1))

    def test_html_and_markdown_when_provided(self):
        class Table:
            def __repr__(self):
                return "T"

            def _repr_html_(self):
                return "<table></table>"

            def _repr_markdown_(self):
                return "| a |"

        outputs, dropped = rich.display_outputs(Table(), 1000)
        self.assertEqual(dropped, 0)
        self.assertEqual([(o["type"], o["data"]) for o in outputs], [("text/plain", "T"), ("text/html", "<table></table>"), ("text/markdown", "| a |")])

    def test_html_method_raising_or_declining(self):
        class Raising:
            def _repr_html_(self):
                raise ValueError("no")

        class Declining:
            def _repr_html_(self):
                return None

        self.assertEqual([o["type"] for o in rich.display_outputs(Raising(), 1000)[0]], ["text/plain"])
        self.assertEqual(rich.display_outputs(Raising(), 1000)[1], 1)
        self.assertEqual(rich.display_outputs(Declining(), 1000)[1], 0)

    def test_catch_all_getattr_and_classes_are_not_taken_for_html(self):
        class Anything:
            def __getattr__(self, name):
                return lambda *a: "<b>forged</b>"

        class WithHtml:
            def _repr_html_(self):
                return "<i>x</i>"

        self.assertEqual([o["type"] for o in rich.display_outputs(Anything(), 1000)[0]], ["text/plain"])
        self.assertEqual([o["type"] for o in rich.display_outputs(WithHtml, 1000)[0]], ["text/plain"])

    def test_long_repr_is_clipped_long_html_dropped(self):
        class Long:
            def __repr__(self):
                return "a" * 5000 + "é" * 5000

            def _repr_html_(self):
                return "<p>" + "x" * 5000 + "</p>"

        outputs, dropped = rich.display_outputs(Long(), 1000)
        self.assertEqual(dropped, 1)
        [plain] = outputs
        self.assertLessEqual(len(plain["data"].encode("utf-8")), 1000)
        self.assertLessEqual(len(json.dumps(plain["data"])), rich.encoded_limit(1000) + 2)
        self.assertIn("characters cut", plain["data"])
        self.assertTrue(plain["data"].startswith("aaa"))

    def test_control_characters_count_as_escaped(self):
        outputs, _ = rich.display_outputs("\x01" * 600, 1000)
        self.assertLessEqual(len(json.dumps(outputs[0]["data"])), rich.encoded_limit(1000) + 2)

    def test_lone_surrogates_are_replaced(self):
        class Odd:
            def __repr__(self):
                return "a\ud800b"

        [plain], _ = rich.display_outputs(Odd(), 1000)
        plain["data"].encode("utf-8")  # would raise on a lone surrogate
        self.assertEqual(plain["data"], "a?b")


class WireTest(unittest.TestCase):
    def section(self, outputs, dropped=0):
        return child.OUTPUTS_MARK + json.dumps({"outputs": outputs, "dropped": dropped}).encode()

    def test_error_outputs_and_exit_mark_are_told_apart(self):
        out = [{"type": "image/png", "data": "iVBO", "kind": "figure"}]
        data = b'S{"type": "E"}' + self.section(out, 2) + b"\x00EXIT [1, 2.5]\n"
        self.assertEqual(main.parse_result(data), (None, {"type": "E"}))
        self.assertEqual(main.parse_outputs(data, 10), (out, 2))
        self.assertEqual(main.parse_outputs(b"S" + self.section(out) + b"\x00EXIT [0, 1]\n", 10), (out, 0))
        self.assertEqual(main.parse_result(b"S" + self.section(out) + b"\x00EXIT [0, 1]\n"), (None, None))

    def test_no_section_no_outputs(self):
        self.assertEqual(main.parse_outputs(b'S{"type": "E"}\x00EXIT [1, 2]\n', 10), ([], 0))
        self.assertEqual(main.parse_outputs(b"F{}", 10), ([], 0))
        self.assertEqual(main.parse_outputs(b"", 10), ([], 0))

    def test_the_last_section_counts_and_a_forged_one_spoils_only_the_error(self):
        forged = self.section([{"type": "image/png", "data": "Zm9yZ2Vk", "kind": "figure"}])
        ours = [{"type": "image/png", "data": "iVBO", "kind": "figure"}]
        data = b"S" + forged + self.section(ours) + b"\x00EXIT [0, 1]\n"
        self.assertEqual(main.parse_outputs(data, 10), (ours, 0))

    def test_malformed_sections_and_items(self):
        self.assertEqual(main.parse_outputs(b"S" + child.OUTPUTS_MARK + b"{not json", 10), ([], 0))
        self.assertEqual(main.parse_outputs(b"S" + child.OUTPUTS_MARK + b'{"outputs": 1, "dropped": 0}', 10), ([], 0))
        self.assertEqual(main.parse_outputs(b"S" + child.OUTPUTS_MARK + b'{"outputs": [], "dropped": true}', 10), ([], 0))
        items = [
            {"type": "image/gif", "data": "R0lG", "kind": "figure"},
            {"type": "text/plain", "data": 5, "kind": "result"},
            {"type": "text/plain", "data": "x", "kind": "other"},
            "nope",
            {"type": "text/html", "data": "<b>", "kind": "result", "extra": 1},
            {"type": "text/plain", "data": "y", "kind": "result"},
        ]
        outputs, dropped = main.parse_outputs(b"S" + self.section(items, 1), 1)
        self.assertEqual(outputs, [{"type": "text/html", "data": "<b>", "kind": "result"}])
        self.assertEqual(dropped, 1 + 5)

    def test_report_has_outputs_only_when_there_are_some(self):
        plain = main.run_report(0, None, [], False, 1.0, [], 0, None)
        self.assertNotIn("outputs", plain)
        self.assertNotIn("outputsDropped", plain)
        out = [{"type": "image/png", "data": "iVBO", "kind": "figure"}]
        self.assertEqual(main.run_report(0, None, [], False, 1.0, [], 0, None, out, 1)["outputs"], out)
        self.assertEqual(main.run_report(0, None, [], False, 1.0, [], 0, None, [], 1)["outputsDropped"], 1)

    def test_rich_section(self):
        self.assertEqual(child.rich_section(None), b"")
        self.assertEqual(child.rich_caps({"case": [0, 1]}), None)
        self.assertEqual(child.rich_caps({"caps": {"maxOutputs": 2, "maxOutputBytes": 10}}), (2, 10))


class RelayResultTest(unittest.TestCase):
    def relay(self, limit=relay.RESULT_LIMIT):
        r = relay.Relay(0, -1, -2, -3, 1 << 20, lambda kind, data: None, result_limit=limit)
        self.kills = []
        r.kill = self.kills.append  # never the real kill_all here: it signals every process
        return r

    def test_exit_mark_split_across_chunks_after_a_large_result(self):
        r = self.relay(limit=4 << 20)
        r.take(0, b"S" + b"x" * (3 << 20))
        self.assertIsNone(r.status)
        r.take(0, b"\x00EX")
        r.take(0, b"IT [7, 1.5")
        self.assertIsNone(r.status)
        self.assertFalse(r.end_said)
        r.take(0, b", 2]\n")
        self.assertEqual((r.status, r.cpu_ms, r.wall_ms), (7 << 8, 1.5, 2))
        self.assertTrue(r.end_said)
        self.assertEqual(self.kills, [None])
        self.assertEqual(len(r.result), 1 + (3 << 20) + len(b"\x00EXIT [7, 1.5, 2]\n"))

    def test_only_the_first_mark_counts(self):
        r = self.relay()
        r.take(0, b"S\x00EXIT [bad]\n")
        r.take(0, b"\x00EXIT [0, 1]\n")
        self.assertIsNone(r.status)
        self.assertFalse(r.end_said)  # a malformed mark says nothing: the end is the reaping's
        self.assertEqual(self.kills, [])

    def test_a_mark_without_its_line_end_is_given_up(self):
        r = self.relay()
        r.take(0, b"S\x00EXIT [0, 1" + b" " * relay.EXIT_MARK_MAX)
        r.take(0, b"]\n")
        self.assertIsNone(r.status)

    def test_the_result_is_kept_up_to_its_limit(self):
        r = self.relay(limit=10)
        r.take(0, b"S" + b"a" * 20)
        r.take(0, b"more")
        self.assertEqual(len(r.result), 21)


@unittest.skipUnless(HAS_MATPLOTLIB, "needs matplotlib (the sandbox image has it)")
class BackendTest(RichTestCase):
    @classmethod
    def setUpClass(cls):
        os.environ.setdefault("MPLCONFIGDIR", "/tmp/.matplotlib")
        import matplotlib

        matplotlib.use("module://pybox_runner.mpl_backend")
        import matplotlib.pyplot as plt

        cls.plt = plt

    def setUp(self):
        super().setUp()
        self.plt.close("all")

    def assertPngs(self, outputs, count):
        self.assertEqual(len(outputs), count)
        for o in outputs:
            self.assertTrue(base64.b64decode(o["data"]).startswith(PNG_SIGNATURE))

    def test_the_backend_is_ours(self):
        self.assertEqual(self.plt.get_backend(), "module://pybox_runner.mpl_backend")

    def test_each_show_gives_an_image_and_starts_afresh(self):
        plt = self.plt
        plt.plot([1, 2])
        plt.show()
        self.assertEqual(plt.get_fignums(), [])
        plt.plot([2, 1])
        plt.show(block=False)
        plt.figure()
        plt.bar([1, 2], [3, 4])  # left open
        outputs, dropped = rich.capture_figures(10, 1 << 20)
        self.assertEqual(dropped, 0)
        self.assertPngs(outputs, 3)
        self.assertEqual(len({o["data"] for o in outputs}), 3)
        self.assertEqual(plt.get_fignums(), [])

    def test_figure_show_keeps_that_figure(self):
        fig, ax = self.plt.subplots()
        ax.plot([1, 3])
        other = self.plt.figure()
        fig.show()
        self.assertEqual(self.plt.get_fignums(), [other.number])
        outputs, _ = rich.capture_figures(10, 1 << 20)
        self.assertPngs(outputs, 2)

    def test_a_figure_that_fails_to_draw_is_dropped(self):
        plt = self.plt
        fig = plt.figure()
        ax = fig.add_subplot()
        ax.plot([1, 2])

        def broken(*args, **kwargs):
            raise RuntimeError("cannot draw")

        ax.draw = broken
        plt.figure().add_subplot().plot([1])
        outputs, dropped = rich.capture_figures(10, 1 << 20)
        self.assertPngs(outputs, 1)
        self.assertEqual(dropped, 1)
        self.assertEqual(plt.get_fignums(), [])

    def test_open_figures_survive_matplotlibs_exit_handler(self):
        import atexit

        self.plt.plot([1, 2])
        rich.keep_open_at_exit()
        atexit._run_exitfuncs()
        self.assertEqual(len(self.plt.get_fignums()), 1)
        self.assertPngs(rich.capture_figures(10, 1 << 20)[0], 1)

    def test_dataframe_displays_as_html(self):
        try:
            import pandas
        except ImportError:
            self.skipTest("pandas is not installed")
        outputs, dropped = rich.display_outputs(pandas.DataFrame({"a": [1, 2]}), 1 << 20)
        self.assertEqual(dropped, 0)
        self.assertEqual([o["type"] for o in outputs], ["text/plain", "text/html"])
        self.assertIn("<table", outputs[1]["data"])


if __name__ == "__main__":
    unittest.main()
