"""The demo's HTML report: self-contained, and its pictures render in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest
from factory_kit import history

from factory.runtime._demo_phases import Cycle, Options, RolloutOutcome
from factory.runtime._demo_traffic import Second
from factory.runtime._report import write_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# Written into the DOM before --dump-dom serialises it: each picture's rendered size.
_MEASURE = """<script>
for (const fig of document.querySelectorAll('figure.picture')) {
  const svg = fig.querySelector('svg');
  const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
  fig.setAttribute('data-rendered', Math.round(box.width) + 'x' + Math.round(box.height));
}
</script>"""


def _outcome(label: str, candidate: str, incumbent: str, state: str, t0: float) -> RolloutOutcome:
    cand, inc = candidate[7:19], incumbent[7:19]
    applied = [(t0, {inc: 100.0, cand: 0.0}, {cand: 100.0}), (t0 + 4, {inc: 90.0, cand: 10.0}, {cand: 50.0}),
               (t0 + 8, {inc: 0.0, cand: 100.0} if state == "promoted" else {inc: 100.0}, {})]
    seconds = [Second(t0 + i, requests={inc: 50, cand: 5 if 4 <= i < 8 else 0},
                      errors={inc: 0, cand: 1 if i == 6 else 0}) for i in range(12)]
    events = [{"event": "started", "t": t0, "stage": 0, "weight": 0.0},
              {"event": "stage", "t": t0 + 4, "stage": 1, "weight": 10.0},
              {"event": state, "t": t0 + 8, "reason": "every stage passed" if state == "promoted" else "diverged"}]
    return RolloutOutcome(label, "rollout-x", candidate, incumbent, state, events, applied, seconds, t0, t0 + 12)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    h = history(tmp, models=3)
    cycle = Cycle(h.store, Options.quick(), model="iris")
    now = time.time()
    cycle.rollouts = [_outcome("candidate", h.models[1], h.models[0], "promoted", now - 60),
                      _outcome("faulty candidate", h.models[2], h.models[1], "rolled-back", now - 30)]
    cycle.timings = {"whole demo": 123.4}
    h.store.refs.set("model/iris/prod", h.models[1], expected=h.models[0], reason="promoted")
    return write_report(cycle, tmp / "out" / "report.html"), h


def test_the_report_is_one_file_with_inline_pictures(report):
    """No external resource: every picture is inline SVG, so the file opens offline and can be mailed."""
    path, h = report
    text = path.read_text()
    assert text.count("<svg") == 3  # two rollouts and the lineage graph
    assert not re.search(r"""(src|href)=["']https?://""", text)
    assert "Lineage of the promoted model" in text and h.models[1][7:19] in text
    assert "rolled-back" in text and "every stage passed" in text


def test_the_lineage_picture_reaches_the_source_datasets(report):
    """The lineage graph names the feature views and the source datasets behind the promoted model."""
    path, _ = report
    text = path.read_text()
    for name in ("customer-profile", "card-activity", "applications", "credit-training"):
        assert name in text


def _chromium(args: list[str], tmp_path, timeout: float = 120.0) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", f"--user-data-dir={profile}", "--window-size=1100,2400", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def test_the_pictures_render_in_headless_chromium(report, tmp_path):
    """Chromium lays out every picture with a real size, and a screenshot of the report is not blank."""
    path, _ = report
    probe = tmp_path / "probe.html"
    probe.write_text(path.read_text().replace("</body>", _MEASURE + "</body>"))
    dom = _chromium(["--dump-dom", probe.as_uri()], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    sizes = re.findall(r'data-rendered="(\d+)x(\d+)"', dom.stdout)
    assert len(sizes) == 3, dom.stdout[:2000]
    assert all(int(w) > 200 and int(h) > 100 for w, h in sizes), sizes

    shot = path.with_name("report.png")
    done = _chromium([f"--screenshot={shot}", path.as_uri()], tmp_path)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    assert float(pixels[..., :3].std()) > 0.05  # text and plots, not one flat colour
