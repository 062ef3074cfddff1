"""The report's index.html in a real browser: headless Chromium (the system's package, /usr/bin/chromium; .ci/run
installs it) opens a small generated report from disk; every table is there, every image loaded, no console
error, and the screenshot is not blank. Without a browser: the page's structure, its Markdown conversion, the
gallery's files and deterministic bytes.

Chromium is driven through the Chrome DevTools Protocol over a pipe (``--remote-debugging-pipe``: JSON messages
separated by NUL bytes on file descriptors 3 and 4), so the test needs no package beyond the browser itself."""
import base64
import io
import json
import os
import select
import shutil
import subprocess
import time
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

from reasonless.report import build_report
from test_render import make_eval

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1280,1000"]

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y "
                                                              "chromium; .ci/run does it)")


class Browser:
    """A headless Chromium and one page, spoken to over the DevTools pipe."""

    def __init__(self, profile, timeout=60.0):
        self.timeout = timeout
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def on_fds_3_and_4():  # in the child: what it reads on 3 and writes on 4
            a, b = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
                                      "about:blank"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=on_fds_3_and_4, close_fds=False)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next = 0
        self.events = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def _send(self, message):
        os.write(self._to_child, json.dumps(message).encode() + b"\0")

    def _receive(self, deadline):
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_child], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed the pipe (exit status {self.proc.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method, session=False, **params):
        self._next += 1
        message = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self._send(message)
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method):
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._receive(deadline))

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"]["value"]

    def close(self):
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A report of a scripted evaluation (every kind of failure), with plots and the gallery."""
    root = tmp_path_factory.mktemp("browser")
    _, eval_path = make_eval(root)
    result = build_report([eval_path], root / "report", gallery=3)
    return result["index"]


@needs_chromium
def test_report_page_in_headless_chromium(report, tmp_path):
    html = report.read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html  # static, offline
    browser = Browser(tmp_path / "profile")
    try:
        browser.call("Page.navigate", session=True, url=report.resolve().as_uri())
        browser.wait_for("Page.loadEventFired")
        page = browser.evaluate("""JSON.stringify({
            tables: document.querySelectorAll('table').length,
            rows: document.querySelectorAll('table tbody tr').length,
            title: document.title,
            images: Array.from(document.images).map(i => ({src: i.getAttribute('src'), complete: i.complete,
                                                           width: i.naturalWidth, height: i.naturalHeight})),
            gallery: document.querySelectorAll('.gallery figure').length,
            records: Array.from(document.querySelectorAll('.gallery figcaption a')).map(a => a.href)})""")
        shot = browser.call("Page.captureScreenshot", session=True, format="png")
        # the gallery, scrolled into view
        browser.evaluate("document.querySelector('.gallery').scrollIntoView(); true")
        gallery_shot = browser.call("Page.captureScreenshot", session=True, format="png")
    finally:
        browser.close()
    page = json.loads(page)
    assert page["title"] == "Evaluation report"
    assert page["tables"] >= 6 and page["rows"] >= 6
    images = page["images"]
    # two plots, and the gallery: 3 invalid plans and 1 valid plan with an invalid trace, each one SVG
    assert sum(i["src"].endswith(".png") for i in images) == 2
    assert sum(i["src"].endswith(".svg") for i in images) == page["gallery"] == 4
    broken = [i for i in images if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]
    assert not broken, broken
    for href in page["records"]:  # each record link is a file of the folder holding that eval row
        with open(unquote(urlparse(href).path)) as f:
            record = json.load(f)
        assert record["suite"] == "wil" and "response" in record
    errors = [e for e in browser.events
              if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert not errors, errors
    import matplotlib.image

    for data in (shot, gallery_shot):
        pixels = matplotlib.image.imread(io.BytesIO(base64.b64decode(data["data"])), format="png")
        assert pixels.shape[0] >= 500 and pixels.shape[1] >= 800
        rgb = pixels[..., :3].reshape(-1, 3)
        # not blank: more than a few colours, and a good share of the page is not the white background
        assert len(np.unique((rgb * 255).astype(np.uint8), axis=0)) > 20
        assert (rgb.min(axis=1) < 0.9).mean() > 0.02


def test_page_structure_gallery_files_and_determinism(report, tmp_path):
    from html.parser import HTMLParser

    class Collect(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.refs = [], []

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            self.tags.append((tag, attrs.get("class")))
            self.refs += [attrs[k] for k in ("src", "href") if k in attrs]

    folder = report.parent
    page = Collect()
    page.feed(report.read_text())
    md = (folder / "report.md").read_text()
    assert page.tags.count(("table", None)) == md.count("\n|---")  # every Markdown table, as a table
    assert ("td", "num") in page.tags and ("figure", None) in page.tags
    for ref in page.refs:  # every picture and record link is a file of the folder
        assert "://" not in ref and (folder / ref).is_file(), ref
    records = sorted(r for r in page.refs if r.endswith(".json"))
    assert records == ["gallery/correct/wil-1.json", "gallery/correct/wil-2.json", "gallery/correct/wil-3.json",
                       "gallery/correct/wil-4.json"]
    assert json.loads((folder / records[0]).read_text())["index"] == 1
    again = build_report([folder.parent / "eval.jsonl"], tmp_path / "again", gallery=3)
    assert again["index"].read_bytes() == report.read_bytes()
    for svg in folder.glob("gallery/correct/*.svg"):
        assert (tmp_path / "again" / "gallery" / "correct" / svg.name).read_bytes() == svg.read_bytes()
    # the suite's corpus gone: the records are still listed, undrawn, and the page says why
    moved = tmp_path / "moved.jsonl"
    moved.write_text((folder.parent / "eval.jsonl").read_text())
    summary = json.loads((folder.parent / "eval.jsonl.summary.json").read_text())
    summary["suites"]["wil"]["path"] = str(tmp_path / "gone")
    (tmp_path / "moved.jsonl.summary.json").write_text(json.dumps(summary))
    html = build_report([moved], tmp_path / "nocorpus", plots=False)["index"].read_text()
    assert "Not drawn:" in html and "is not there" in html and "gallery/correct/wil-1.json" in html
    assert "<img" not in html


def test_markdown_conversion():
    from reasonless.html_report import markdown_html

    out = markdown_html("# T `x`\n\nSee [final/report.md](final/report.md) and **b** _note_ snake_case.\n\n"
                        "| arm | n |\n|---|---:|\n| a \\| b | <1> |\n\n![plot](p.png)")
    assert out.splitlines()[0] == "<h1>T <code>x</code></h1>"
    assert '<a href="final/index.html">final/report.md</a>' in out and "<strong>b</strong>" in out
    assert "<em>note</em> snake_case" in out
    assert '<td>a | b</td><td class="num">&lt;1&gt;</td>' in out and '<th class="num">n</th>' in out
    assert '<figure><img src="p.png" alt="plot"></figure>' in out
