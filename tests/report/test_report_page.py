"""report.html of real runs, opened in headless Chromium: every allocation where its pfn says, mismatches in words.

The runs are `cma-tool run --target serial` against the bench-board
simulator (tests/sim), which plays back a real kernel's console: a passing
run, and the negative control (`--model-pin linux,cma=0x60000000`: the
model puts the default area 64 MiB lower than the kernel did, exit 5).
Screenshots are kept under each test's tmp folder and their paths printed
(pytest -s shows them).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cma_tool.model.events import NO_PFN, Event, parse_trace_line
from cma_tool.report.html import write_index
from cma_tool.report.svg import AXIS_W, LANE_GAP, LANE_W, MIN_BOX_W
from tests.e2e.test_run_serial import SerialRun, run_serial
from tests.report.browser import Node, browse, browse_with, parse_html

ROOT = Path(__file__).parents[2]
pytestmark = [pytest.mark.slow]
PAGE = 4096
LANE_X = {"model": AXIS_W, "kernel": AXIS_W + LANE_W + LANE_GAP}


@pytest.fixture(scope="module")
def passing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SerialRun]:
    yield from run_serial(tmp_path_factory.mktemp("pass"))


@pytest.fixture(scope="module")
def negative(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SerialRun]:
    yield from run_serial(tmp_path_factory.mktemp("negative"), "--model-pin", "linux,cma=0x60000000")


def _json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def allocations(events: list[Event]) -> list[tuple[str, int, int, int, int | None]]:
    """(area, pfn, count, event number of the allocation, of its release or None) for each allocation made."""
    out: list[tuple[str, int, int, int, int | None]] = []
    held: dict[tuple[str, int, int], int] = {}
    for n, e in enumerate(events, 1):
        if e.kind == "alloc_finish" and not e.failed and e.pfn not in (None, NO_PFN):
            assert e.pfn is not None
            held[(e.area, e.pfn, e.count)] = n
        elif e.kind == "release" and e.pfn is not None and (e.area, e.pfn, e.count) in held:
            out.append((e.area, e.pfn, e.count, held.pop((e.area, e.pfn, e.count)), n))
    out += [(area, pfn, count, n, None) for (area, pfn, count), n in held.items()]
    return sorted(out, key=lambda a: a[3])


def lane_events(out: Path) -> dict[str, list[Event]]:
    report = _json(out / "report.json")
    model = [e for e in (parse_trace_line(t) for t in report["prediction"]["events"]) if e is not None]
    kernel = [Event.from_json(e) for e in _json(out / "observed.json")["events"]]
    return {"model": model, "kernel": kernel}


def area_bases(out: Path) -> dict[str, dict[str, int]]:
    """Each area's base pfn as the model (predicted.json) and the kernel (observed.json) have it."""
    model = {a["name"]: a["base"] // PAGE for a in _json(out / "predicted.json")["boot"]["areas"]}
    kernel = {a["name"]: a["base"] // PAGE for a in _json(out / "observed.json")["areas"]}
    return {"model": model, "kernel": kernel}


def assert_every_allocation_drawn_at_its_pfn(dom: Node, out: Path) -> list[Node]:
    bases = area_bases(out)
    rects = dom.find_all("rect", cls="alloc")
    for lane, events in lane_events(out).items():
        expected = allocations(events)
        drawn = [r for r in rects if r.attrs["data-lane"] == lane]
        assert sorted((r.attrs["data-area"], int(r.attrs["data-pfn"]), int(r.attrs["data-count"]),
                       int(r.attrs["data-step"])) for r in drawn) == sorted(a[:4] for a in expected), lane
        for area, pfn, count, step, until in expected:
            (rect,) = [r for r in drawn if r.attrs["data-area"] == area and int(r.attrs["data-pfn"]) == pfn
                       and int(r.attrs["data-step"]) == step]
            panel = dom.find("g", cls="area-map", data_area=area)
            # The documented scale: each lane starts at its own area's base; LANE_W pixels for data-pages pages.
            base = bases[lane][area]
            assert int(panel.attrs[f"data-first-pfn-{lane}"]) == base
            ppp = LANE_W / int(panel.attrs["data-pages"])
            assert float(panel.attrs["data-px-per-page"]) == pytest.approx(ppp)
            assert int(panel.attrs[f"data-lane-x-{lane}"]) == LANE_X[lane]
            assert float(rect.attrs["x"]) == pytest.approx(LANE_X[lane] + (pfn - base) * ppp, abs=0.01)
            assert float(rect.attrs["width"]) == pytest.approx(max(count * ppp, MIN_BOX_W), abs=0.01)
            # Time runs down: the box starts on its allocation's row (and ends on its release's).
            row = panel.find("g", data_row=str(step))
            assert float(rect.attrs["y"]) == float(row.attrs["data-y"]) + 2
            assert rect.attrs.get("data-until") == (str(until) if until is not None else None)
    return rects


def test_a_passing_run_draws_every_allocation_where_its_pfn_says(passing: SerialRun, tmp_path: Path) -> None:
    assert passing.result.returncode == 0, passing.result.stderr
    page = passing.out / "report.html"
    assert page.is_file(), "the run did not write report.html"
    dom = browse(page, tmp_path / "passing.png")
    assert dom.find("body").attrs.get("data-ready") == "yes", "the page's script did not run to its end"
    assert "PASS" in dom.find(cls="verdict").text()
    facts = dom.find("dl").text()
    assert "sim-aquila" in facts and "linux-6.1" in facts and "serial / boot uboot" in facts and \
        "the board's needs" in facts
    assert "init" in dom.find("ul", cls="stages").text()
    rects = assert_every_allocation_drawn_at_its_pfn(dom, passing.out)
    assert len(rects) == 10  # the atomic pool and 4 buffers of 1080p YUYV, in both lanes
    assert not dom.find_all(cls="mismatch") and not dom.find_all(cls="mismatch-label")


def test_the_negative_control_marks_each_mismatch_in_words_not_colour_alone(negative: SerialRun,
                                                                          tmp_path: Path) -> None:
    assert negative.result.returncode == 5, negative.result.stderr
    dom = browse(negative.out / "report.html", tmp_path / "negative.png")
    assert "MISMATCH" in dom.find(cls="verdict").text()
    rects = assert_every_allocation_drawn_at_its_pfn(dom, negative.out)
    checks = negative.report["checks"]
    events = [c for c in checks if c["group"] == "events"]
    bad_allocs = [n for n, c in enumerate(events, 1) if not c["passed"] and "alloc_finish" in c["name"]]
    assert bad_allocs == [2, 4, 6, 8, 10]
    for n in bad_allocs:
        for lane in ("model", "kernel"):
            (rect,) = [r for r in rects if r.attrs["data-step"] == str(n) and r.attrs["data-lane"] == lane]
            assert "mismatch" in rect.classes and rect.attrs["data-mismatch"] == "true"
            (label,) = dom.find_all("text", cls="mismatch-label", data_step=str(n), data_lane=lane)
            assert "✗ mismatch" in label.text()
        row = dom.find("g", data_row=str(n))
        assert "mismatch" in row.classes
        note = row.find("text", cls="note")
        assert "MISMATCH" in note.text() and events[n - 1]["cause"] in note.find("title").text()
    # The model put everything 0x4000 pages lower; each lane from its own base, the boxes line up.
    for n in bad_allocs:
        model, kernel = (next(r for r in rects if r.attrs["data-step"] == str(n) and r.attrs["data-lane"] == lane)
                         for lane in ("model", "kernel"))
        assert int(kernel.attrs["data-pfn"]) - int(model.attrs["data-pfn"]) == 0x4000
        assert float(kernel.attrs["x"]) - LANE_X["kernel"] == pytest.approx(float(model.attrs["x"]) - LANE_X["model"])
    assert dom.find_all("rect", cls="area-box", data_lane="kernel")[0].classes >= {"area-box", "mismatch"}
    assert "base differs" in dom.find("figure", cls="area").find("figcaption").text()
    failed = [c for c in checks if not c["passed"]]
    assert len(dom.find_all("tr", cls="mismatch")) == len(failed) + sum(1 for c in events if not c["passed"])
    for tr in dom.find_all("tr", cls="event"):
        n = int(tr.attrs["data-step"])
        assert ("✗ mismatch" in tr.text()) == (not events[n - 1]["passed"])


def test_each_event_links_to_the_console_line_it_came_from_and_back(passing: SerialRun) -> None:
    dom = parse_html((passing.out / "report.html").read_text())
    lines = (passing.out / "console.log").read_text(errors="replace").splitlines()
    kernel = [Event.from_json(e) for e in _json(passing.out / "observed.json")["events"]]
    rows = dom.find_all("tr", cls="event")
    assert len(rows) == len(kernel) == 14
    for tr, event in zip(rows, kernel, strict=True):
        (link,) = [a for a in tr.find_all("a") if a.attrs["href"].startswith("#L")]
        number = int(link.attrs["href"][2:])
        traced = parse_trace_line(lines[number - 1])
        assert traced == event and traced is not None and traced.timestamp == event.timestamp
        line = dom.find("span", id=f"L{number}")
        assert "trace" in line.classes
        assert line.find("a", cls="back").attrs["href"] == f"#{tr.attrs['id']}"
    assert dom.find_all("span", cls="cma"), "the CMA boot lines are not highlighted"


def test_cmafree_is_plotted_from_the_capture_programs_readings(passing: SerialRun) -> None:
    dom = parse_html((passing.out / "report.html").read_text())
    readings = [s["cma_free_kb"] for s in _json(passing.out / "observed.json")["capture"] if "cma_free_kb" in s]
    circles = dom.find("section", id="cmafree").find_all("circle", cls="reading")
    assert [int(c.attrs["data-kb"]) for c in circles] == readings and len(readings) > 10
    labels = dom.find("section", id="cmafree").text()
    assert "fimc0 REQBUFS 4: -16208 kB" in labels  # the four 1080p buffers: 4 x 1013 pages + alignment


def _external_references(text: str) -> list[str]:
    """Everything in an HTML text that would make a browser fetch or leave the file."""
    dom = parse_html(text)
    found = []
    for node in dom.iter():
        if node.tag in ("link", "img", "iframe", "object", "embed", "base", "frame", "audio", "video", "source"):
            found.append(f"<{node.tag}>")
        for key, value in node.attrs.items():
            if key in ("src", "srcset", "action", "formaction", "poster", "data", "background", "xmlns",
                       "xlink:href") or (key == "href" and not value.startswith("#")):
                found.append(f"{node.tag} {key}={value}")
            if "://" in value or re.search(r"url\((?!#)", value):
                found.append(f"{node.tag} {key}={value}")
        if node.tag in ("style", "script"):
            body = node.text()
            found += [f"{node.tag}: {m}" for m in re.findall(r"https?:|//[a-z]|@import|url\((?!#)[^)]*\)|"
                                                                r"\bfetch\(|XMLHttpRequest|\.src\b", body)]
    return found


def test_the_pages_reference_nothing_outside_themselves(passing: SerialRun, negative: SerialRun) -> None:
    for run in (passing, negative):
        text = (run.out / "report.html").read_text()
        assert _external_references(text) == [], run.out
        assert "http://" not in text and "https://" not in text
    assert _external_references('<img src="x.png"><a href="https://example.org">x</a><svg xmlns="x">') == [
        "<img>", "img src=x.png", "a href=https://example.org", "a href=https://example.org", "svg xmlns=x"]


def test_board_text_is_shown_as_text_never_run_as_html(passing: SerialRun, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(passing.out, out)
    evil = '<script>document.body.dataset.pwned="script"</script><img src=x onerror="document.body.dataset.pwned=1">'
    with open(out / "console.log", "a", encoding="utf-8") as fh:
        fh.write(f"\n{evil}\n\x1b[31mcma: </pre><b>bold</b>\x00\n")
    observed = _json(out / "observed.json")
    observed["capture"][6]["label"] = '<i class="pwned">fimc0</i>'
    (out / "observed.json").write_text(json.dumps(observed))
    done = subprocess.run([sys.executable, "-m", "cma_tool", "report", str(out)], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0 and done.stdout.strip() == str(out / "report.html"), done.stderr
    dom = browse(out / "report.html", tmp_path / "escaped.png")
    assert "data-pwned" not in dom.find("body").attrs and not dom.find_all("img") and not dom.find_all(cls="pwned")
    console = dom.find("pre", cls="console").text()
    assert evil in console and "</pre><b>bold</b>" in console and "\x1b" not in console and "\x00" not in console
    assert '<i class="pwned">fimc0</i> REQBUFS 4' in dom.find("section", id="cmafree").text()


def test_the_checks_filter_and_the_event_slider_work_in_the_browser(negative: SerialRun, tmp_path: Path) -> None:
    script = """
      var r = document.getElementById('f-result'); r.value = 'fail'; r.dispatchEvent(new Event('change'));
      var s = document.getElementById('step'); s.value = '6'; s.dispatchEvent(new Event('input'));
    """
    dom = browse_with(negative.out / "report.html", script, tmp_path / "stepped.png")
    checks = negative.report["checks"]
    shown = [tr for tr in dom.find_all("tr", cls="check") if "filtered" not in tr.classes]
    assert len(shown) == sum(1 for c in checks if not c["passed"]) and all(tr.attrs["data-result"] == "fail"
                                                                           for tr in shown)
    assert dom.find(id="f-count").text() == f"{len(shown)} of {len(checks)} shown"
    assert "stepping" in dom.find("body").classes
    for rect in dom.find_all("rect", cls="alloc"):
        step = int(rect.attrs["data-step"])
        assert ("current" in rect.classes) == (step == 6 or rect.attrs.get("data-until") == "6")
        assert ("future" in rect.classes) == (step > 6)
    assert "current" in dom.find("tr", id="ev-6").classes
    assert dom.find(id="step-label").text().startswith("#6 fimc0: got 1013 pages at pfn 0x64500")


def test_printing_shows_everything_the_screen_can_hide(negative: SerialRun, tmp_path: Path) -> None:
    """The print rules applied on screen, after filtering and stepping: nothing left hidden or clipped."""
    text = (negative.out / "report.html").read_text()
    print_css = text.split("@media print{", 1)[1].split("\n}\n", 1)[0]
    script = """
      var r = document.getElementById('f-result'); r.value = 'pass'; r.dispatchEvent(new Event('change'));
      var s = document.getElementById('step'); s.value = '3'; s.dispatchEvent(new Event('input'));
      var hidden = [];
      document.querySelectorAll('tr, rect.alloc, section, figure, .ln').forEach(function (el) {
        var st = getComputedStyle(el);
        if (st.display === 'none' || st.visibility === 'hidden' || +st.opacity < 1)
          hidden.push(el.id || el.className.baseVal || el.className);
      });
      var pre = getComputedStyle(document.querySelector('pre.console'));
      document.body.setAttribute('data-hidden', hidden.join(','));
      document.body.setAttribute('data-console', pre.maxHeight + ' ' + pre.overflowY);
      document.body.setAttribute('data-controls', getComputedStyle(document.getElementById('stepper')).display);
    """
    dom = browse_with(negative.out / "report.html", script, tmp_path / "print.png", css=print_css, height=3000)
    body = dom.find("body")
    assert body.attrs["data-hidden"] == ""
    assert body.attrs["data-console"] == "none visible"
    assert body.attrs["data-controls"] == "none"  # the controls are the one thing a page needs no more


def test_a_run_that_stopped_after_the_plan_gets_a_page_of_what_it_knew(tmp_path: Path) -> None:
    (run,) = list(run_serial(tmp_path, "--console", str(tmp_path / "no-such-tty")))
    assert run.result.returncode == 3, run.result.stderr
    assert run.report["verdict"] == "infrastructure"
    dom = parse_html((run.out / "report.html").read_text())
    assert "INFRASTRUCTURE" in dom.find(cls="verdict").text()
    assert run.report["message"].splitlines()[0] in dom.find(cls="message").text()
    # The model's prediction was made before the board was touched: its lane is drawn, the kernel's is empty.
    rects = dom.find_all("rect", cls="alloc")
    assert rects and {r.attrs["data-lane"] for r in rects} == {"model"}
    assert "No check was run" in dom.find("section", id="checks").text()
    assert _external_references((run.out / "report.html").read_text()) == []


def test_the_index_links_each_runs_report_with_its_verdict(passing: SerialRun, negative: SerialRun,
                                                          tmp_path: Path) -> None:
    never = tmp_path / "cells" / "never-started"
    never.mkdir(parents=True)
    dest = write_index([passing.out, negative.out, never], tmp_path / "matrix" / "index.html")
    dom = browse(dest, tmp_path / "index.png", height=600)
    rows = dom.find_all("tr", cls="run")
    assert [r.attrs["data-verdict"] for r in rows] == ["pass", "mismatch", "no report"]
    assert "PASS" in rows[0].text() and "MISMATCH" in rows[1].text() and "did not start" in rows[2].text()
    for row, run in zip(rows, (passing, negative), strict=False):
        href = row.find("a").attrs["href"]
        assert not href.startswith("/") and "://" not in href
        assert (dest.parent / href).resolve() == (run.out / "report.html").resolve()
    assert not rows[2].find_all("a")  # nothing to link to
    refs = _external_references(dest.read_text())
    assert all(r.startswith("a href=") and r.endswith("/report.html") for r in refs), refs


def test_the_index_refuses_a_folder_that_does_not_exist(tmp_path: Path) -> None:
    from cma_tool.errors import ConfigError

    with pytest.raises(ConfigError, match="no-such-run"):
        write_index([tmp_path / "no-such-run"], tmp_path / "index.html")


def test_failed_allocations_and_retries_are_marks_not_boxes(passing: SerialRun, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(passing.out, out)
    observed = _json(out / "observed.json")
    events = observed["events"]
    # An allocation that is retried after -EBUSY and then fails, and a release of pages allocated before tracing.
    events[10:10] = [{"kind": "alloc_start", "area": "linux,cma", "count": 5000, "align": 8},
                     {"kind": "busy_retry", "area": "linux,cma", "count": 5000, "align": 8, "pfn": 0x65100},
                     {"kind": "alloc_finish", "area": "linux,cma", "count": 5000, "align": 8, "pfn": NO_PFN,
                      "failed": True}]
    events.append({"kind": "release", "area": "region@43000000", "count": 10, "pfn": 0x43000})
    (out / "observed.json").write_text(json.dumps(observed))
    dom = browse(subprocess_report(out), tmp_path / "marks.png", height=1100)
    marks = [m.text() for m in dom.find_all("text", cls="mark", data_lane="kernel")]
    assert marks == ["busy retry: 5000 pages at pfn 0x65100 could not…", "allocation of 5000 pages from linux,cma failed"]
    assert not [r for r in dom.find_all("rect", cls="alloc") if r.attrs["data-count"] in ("5000", "10")]
    # The kernel traced more events than the model predicted: nothing is paired by guesswork.
    assert len(dom.find_all("tr", cls="event")) == 18 and not dom.find_all(cls="mismatch-label")
    assert "released 10 pages at pfn 0x43000" in dom.find("figure", id="area-1").text()


def subprocess_report(out: Path) -> Path:
    done = subprocess.run([sys.executable, "-m", "cma_tool", "report", str(out)], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())
