"""The HTML run report: one self-contained file, rendered by a real browser (Debian's headless Chromium),
holding every step's name and status, folded logs and annotations, and no secret (nor a fragment of one)."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from obs_testlib import REPO, base_env

from runnerlib.observability.report import ReportItem, annotations_in_log, render

SECRET = "Rep0rt-s3cret-Value-7781q"
JOB = """
name: reported
steps:
  compile:
    command: "echo '##[group]Install deps'; echo installing; echo '##[group]inner'; echo deep; echo '##[endgroup]'; echo '##[endgroup]'; echo key=$MY_TOKEN; echo '<script>document.title=\\"pwned\\"</script>'"
  test:
    command: "echo '::warning file=src/app.py,line=12::slow test'; echo ok"
    depends_on: [compile]
  lint:
    command: "echo '::error::style problem'; exit 2"
    allow_failure: true
  package:
    command: "echo packaging $MY_TOKEN | base64 >/dev/null; echo done"
    depends_on: [test, lint]
  never:
    command: "true"
    condition: "branch == 'release'"
"""
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _fragments(secret: str) -> list[str]:
    return [secret[i:i + 8] for i in range(0, len(secret) - 7, 4)]


def _chromium() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return binary


def _png_colours(path: Path) -> int:
    """How many distinct colours a (non-interlaced, 8-bit RGB/RGBA) PNG holds, decoded with zlib."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    assert header is not None
    width, height, depth, colour_type = header[:4]
    assert depth == 8 and colour_type in (2, 6)
    bpp = 3 if colour_type == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    previous = bytearray(stride)
    colours: set[bytes] = set()
    for y in range(height):
        filt = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):  # undo the PNG filters (RFC 2083 6.2)
            a = line[i - bpp] if i >= bpp else 0
            b = previous[i]
            c = previous[i - bpp] if i >= bpp else 0
            if filt == 1:
                line[i] = (line[i] + a) & 255
            elif filt == 2:
                line[i] = (line[i] + b) & 255
            elif filt == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif filt == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        if y % 4 == 0:
            colours.update(bytes(line[x:x + 3]) for x in range(0, stride, bpp * 2))
        previous = line
    return len(colours)


def _run(ws: Path, report: Path, command: str = "run-job") -> subprocess.CompletedProcess[bytes]:
    (ws / "job.yaml").write_text(JOB)
    return subprocess.run([sys.executable, "-m", "runnerlib.cli", command, "--workspace-root", str(ws),
                           "--report", str(report), str(ws / "job.yaml")],
                          env=base_env(MY_TOKEN=SECRET, REACTORCIDE_SECRET_ENV_NAMES="MY_TOKEN"), cwd=REPO,
                          capture_output=True, timeout=120)


def test_report_renders_in_headless_chromium(ws: Path) -> None:
    chromium = _chromium()
    report = ws / "report.html"
    r = _run(ws, report)
    assert r.returncode == 0, r.stdout.decode()[-2000:] + r.stderr.decode()
    page = report.read_text()
    # Self-contained: nothing fetched from anywhere.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page
    # No secret, nor a fragment of one (the step printed it; the masked log is what is shown).
    for fragment in _fragments(SECRET):
        assert fragment not in page
    shot = ws / "shot.png"
    profile = ws / "chromium-profile"
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                    "--window-size=1200,900", report.as_uri()], capture_output=True, timeout=120, check=True)
    assert _png_colours(shot) > 20, "the screenshot is (nearly) blank"
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", report.as_uri()],
                         capture_output=True, timeout=120, check=True).stdout.decode()
    summary = json.loads((ws / "artifacts" / "logs" / "summary.json").read_text())
    for step in summary["steps"]:
        assert f">{step['name']}<" in dom and f">{step['status']}<" in dom, step["name"]
    assert {s["status"] for s in summary["steps"]} == {"success", "failed", "skipped"}
    # Logs folded by group, nested; annotations listed; the printed markup is text, not an element.
    assert "<summary>Install deps</summary>" in dom and "<summary>inner</summary>" in dom
    assert "slow test" in dom and "src/app.py:12" in dom and "style problem" in dom
    assert "<title>runnerlib job reported</title>" in dom and "pwned" not in dom.split("</title>")[0]
    assert "&lt;script&gt;document.title" in dom
    assert "key=***" in dom
    for fragment in _fragments(SECRET):
        assert fragment not in dom


def test_report_without_masking_would_leak_and_markup_is_escaped() -> None:
    """ATTACK control: the same page rendered with an identity mask carries the secret, so the scan above
    can fail; and a log line of markup stays text either way."""
    item = ReportItem(name="s", status="success", log=f"token {SECRET}\n<img src=x onerror=alert(1)>\n")
    leaky = render("t", "", [item], mask=lambda s: s)
    assert SECRET in leaky
    masked = render("t", "", [item], mask=lambda s: s.replace(SECRET, "***"))
    assert SECRET not in masked
    assert "<img src=x" not in masked and "&lt;img src=x onerror=alert(1)&gt;" in masked


def test_unclosed_groups_and_annotation_parsing() -> None:
    page = render("t", "", [ReportItem(name="s", status="failed", log="##[group]a\nx\n::group::b\ny\n")],
                  mask=lambda s: s)
    assert page.count("<details class=\"group\">") == 2
    assert page.count("<details") == page.count("</details>")
    found = annotations_in_log("[build] ::error file=a.py,line=3,col=1::bad\n::notice::fyi\nplain ::warning:: no")
    assert found == [{"level": "error", "message": "bad", "file": "a.py", "line": "3", "col": "1"},
                     {"level": "notice", "message": "fyi"}]


_SAFE = st.text(alphabet=st.characters(blacklist_characters=",:\n\r=", blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
                min_size=1, max_size=20).map(str.strip).filter(bool)


@given(st.sampled_from(["error", "warning", "notice"]), _SAFE, st.integers(1, 10**6),
       st.text(max_size=40).map(lambda t: " ".join(t.split())))
def test_annotation_lines_round_trip(level: str, file: str, line: int, message: str) -> None:
    found = annotations_in_log(f"noise\n::{level} file={file},line={line}::{message}\nmore")
    assert found == [{"level": level, "message": message, "file": file, "line": str(line)}]


@given(st.text(max_size=300))
def test_any_log_renders_balanced_and_escaped(text: str) -> None:
    page = render("t", "", [ReportItem(name="s", status="success", log=text)], mask=lambda s: s)
    assert page.count("<details") == page.count("</details>")
    assert "<script>" not in page.split("</head>")[1]
