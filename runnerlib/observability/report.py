"""The run report: ONE self-contained HTML file (no network: styles, the graph and the one script are inline)
showing the step graph (or a workflow's job graph), a timeline, resource use, annotations and each step's
log folded by group (`##[group]` / `::group::` lines open a nested fold, `##[endgroup]` / `::endgroup::`
close it).

Every text placed in the page is masked with the job's registry, then escaped with html.escape: a step
name, a log line or an annotation cannot inject markup, and a secret cannot appear.
"""

from __future__ import annotations

import html
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runnerlib.execution.timestamps import strip_stamps
from runnerlib.observability.profile import human_bytes

MAX_LOG_BYTES = 1 << 20  # per step: the report is for reading; the full log stays in artifacts/logs
STATUS_COLOURS = {"success": "#2da44e", "failed": "#cf222e", "timed_out": "#cf222e", "refused": "#8250df",
                  "cancelled": "#bf8700", "skipped": "#8c959f", "pending": "#8c959f", "running": "#0969da",
                  "allowed_failure": "#bf8700"}


@dataclass
class ReportItem:
    """One node of the report: a step of a job, or a job of a workflow."""

    name: str
    status: str
    started: float | None = None
    finished: float | None = None
    exit_code: int | None = None
    depends_on: list[str] = field(default_factory=list)
    trust: str | None = None
    reason: str | None = None
    attempts: int | None = None
    resources: Mapping[str, Any] | None = None
    annotations: list[Mapping[str, Any]] = field(default_factory=list)
    log: str = ""


def items_from_steps(steps: Iterable[Any], depends: Mapping[str, list[str]],
                     read_log: Callable[[str], str]) -> list[ReportItem]:
    """Report items from a job's StepResults (`depends`: step -> depends_on; `read_log`: step -> text)."""
    out = []
    for r in steps:
        data = r.as_dict() if hasattr(r, "as_dict") else dict(r)
        out.append(ReportItem(
            name=data["name"], status=data.get("status", "pending"), started=data.get("started"),
            finished=data.get("finished"), exit_code=data.get("exit_code"), depends_on=list(depends.get(data["name"], [])),
            trust=data.get("trust"), reason=data.get("reason"), attempts=data.get("attempts"),
            resources=data.get("resources"), annotations=list(data.get("annotations") or []),
            log=read_log(data["name"])))
    return out


def _levels(items: list[ReportItem]) -> dict[str, int]:
    names = {i.name for i in items}
    deps = {i.name: [d for d in i.depends_on if d in names] for i in items}
    level: dict[str, int] = {}

    def depth(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name in level:
            return level[name]
        if name in seen:  # a cycle cannot pass validation; never recurse forever on a broken input
            return 0
        level[name] = 1 + max((depth(d, seen | {name}) for d in deps[name]), default=-1)
        return level[name]

    for i in items:
        depth(i.name)
    return level


def _graph(items: list[ReportItem], esc: Callable[[Any], str]) -> str:
    """The DAG as inline SVG: one column per level, edges from each dependency."""
    level = _levels(items)
    columns: dict[int, list[str]] = {}
    for i in items:
        columns.setdefault(level[i.name], []).append(i.name)
    w, h, gx, gy = 170, 38, 60, 16
    pos = {name: (20 + col * (w + gx), 20 + row * (h + gy))
           for col, names in columns.items() for row, name in enumerate(names)}
    width = 40 + (max(columns, default=0) + 1) * (w + gx) - gx
    height = 40 + max((len(v) for v in columns.values()), default=1) * (h + gy) - gy
    parts = [f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="step graph">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#57606a"/></marker></defs>']
    for i in items:
        for dep in i.depends_on:
            if dep in pos:
                (x1, y1), (x2, y2) = pos[dep], pos[i.name]
                parts.append(f'<path d="M{x1 + w},{y1 + h / 2} C{x1 + w + gx / 2},{y1 + h / 2} {x2 - gx / 2},'
                             f'{y2 + h / 2} {x2},{y2 + h / 2}" fill="none" stroke="#57606a" '
                             'marker-end="url(#arrow)"/>')
    for i in items:
        x, y = pos[i.name]
        colour = STATUS_COLOURS.get(i.status, "#8c959f")
        label = i.name if len(i.name) <= 20 else i.name[:19] + "…"
        parts.append(f'<g><title>{esc(i.name)}: {esc(i.status)}</title>'
                     f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" fill="#fff" stroke="{colour}" '
                     f'stroke-width="2"/><rect x="{x}" y="{y}" width="8" height="{h}" rx="3" fill="{colour}"/>'
                     f'<text x="{x + 16}" y="{y + 16}" font-size="13" font-weight="600">{esc(label)}</text>'
                     f'<text x="{x + 16}" y="{y + 31}" font-size="11" fill="{colour}">{esc(i.status)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def _timeline(items: list[ReportItem], esc: Callable[[Any], str]) -> str:
    ran = [i for i in items if i.started is not None and i.finished is not None]
    if not ran:
        return "<p>No step ran.</p>"
    t0 = min(i.started or 0.0 for i in ran)
    span = max(max(i.finished or 0.0 for i in ran) - t0, 1e-6)
    rows = []
    for i in items:
        started, finished = i.started, i.finished
        if started is None or finished is None:
            bar = '<div class="bar none"></div>'
            took = "-"
        else:
            left = 100 * (started - t0) / span
            width = max(100 * (finished - started) / span, 0.4)
            colour = STATUS_COLOURS.get(i.status, "#8c959f")
            took = _seconds(finished - started)
            bar = (f'<div class="bar" style="left:{left:.3f}%;width:{width:.3f}%;background:{colour}" '
                   f'title="{esc(i.name)} {esc(i.status)} {took}"></div>')
        rows.append(f'<div class="trow"><div class="tname">{esc(i.name)}</div><div class="track">{bar}</div>'
                    f'<div class="tdur">{took}</div><div class="tstatus s-{esc(i.status)}">{esc(i.status)}</div></div>')
    return (f'<div class="timeline">{"".join(rows)}</div><p class="muted">0 s to {_seconds(span)} after the '
            'first start</p>')


def _resources(items: list[ReportItem], esc: Callable[[Any], str], kind: str) -> str:
    rows = []
    for i in items:
        r = i.resources or {}
        if not r:
            continue
        rows.append(f"<tr><td>{esc(i.name)}</td><td>{r.get('cpu_user_seconds', 0):.2f}s</td>"
                    f"<td>{r.get('cpu_system_seconds', 0):.2f}s</td><td>{human_bytes(r.get('max_rss_bytes'))}</td>"
                    f"<td>{human_bytes(r.get('read_bytes'))}</td><td>{human_bytes(r.get('write_bytes'))}</td>"
                    f"<td>{human_bytes(r.get('output_bytes'))}</td></tr>")
    if not rows:
        return "<p>No resource profile (nothing ran through the process wrapper).</p>"
    return (f"<table><thead><tr><th>{kind}</th><th>CPU user</th><th>CPU system</th><th>peak RSS</th><th>read</th>"
            "<th>written</th><th>output</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


# A workflow job's log prefixes each line with its step: "[build] ::warning::...".
_ANNOTATION = re.compile(r"(?:\[[^\]]*\] )?::(error|warning|notice)(?: ([^:]*))?::(.*)")


def annotations_in_log(text: str) -> list[dict[str, Any]]:
    """`::error file=F,line=N::message` (and warning, notice) lines of a log, as annotation dicts: used when
    the step result carries no `annotations` list of its own."""
    out: list[dict[str, Any]] = []
    for line in strip_stamps(text).splitlines():
        match = _ANNOTATION.match(line.strip())
        if match:
            level, params, message = match.groups()
            entry: dict[str, Any] = {"level": level, "message": message}
            for pair in (params or "").split(","):
                key, _, value = pair.partition("=")
                if key.strip() in ("file", "line", "col", "title") and value:
                    entry[key.strip()] = value.strip()
            out.append(entry)
    return out


def _annotations(items: list[ReportItem], esc: Callable[[Any], str]) -> str:
    rows = []
    for i in items:
        for a in i.annotations or annotations_in_log(i.log):
            where = a.get("file") or ""
            if where and a.get("line"):
                where += f":{a['line']}"
            level = str(a.get("level") or "notice")
            rows.append(f'<li class="ann-{esc(level)}"><b>{esc(level)}</b> [{esc(i.name)}] '
                        f'{esc(where) + ": " if where else ""}{esc(a.get("message") or "")}</li>')
    return f'<ul class="annotations">{"".join(rows)}</ul>' if rows else "<p>No annotations.</p>"


def _group_title(line: str) -> str | None:
    for marker in ("##[group]", "::group::"):
        if line.startswith(marker):
            return line[len(marker):] or "group"
    return None


def _folded_log(text: str, esc: Callable[[Any], str]) -> str:
    """A log as <pre> blocks, `##[group]`...`##[endgroup]` runs as nested <details> (unclosed ones closed)."""
    out: list[str] = ["<pre>"]
    depth = 0
    for line in text.splitlines():
        stripped = strip_stamps(line).strip()  # a step log's lines start with their timestamp
        title = _group_title(stripped)
        if title is not None:
            out.append(f'</pre><details class="group"><summary>{esc(title)}</summary><pre>')
            depth += 1
        elif stripped in ("##[endgroup]", "::endgroup::") and depth:
            out.append("</pre></details><pre>")
            depth -= 1
        else:
            out.append(esc(line) + "\n")
    out.append("</pre>" + "</details>" * depth)  # groups never closed end with the log
    return "".join(out).replace("<pre></pre>", "")


def _logs(items: list[ReportItem], esc: Callable[[Any], str]) -> str:
    parts = []
    for i in items:
        meta = [f"status {esc(i.status)}"]
        if i.exit_code is not None:
            meta.append(f"exit {i.exit_code}")
        if i.attempts and i.attempts > 1:
            meta.append(f"{i.attempts} attempts")
        if i.trust:
            meta.append(esc(i.trust))
        if i.reason:
            meta.append(esc(i.reason))
        body = _folded_log(i.log, esc) if i.log else '<p class="muted">no output</p>'
        parts.append(f'<details class="step" id="log-{esc(i.name)}"{" open" if i.status not in ("success", "skipped") else ""}>'
                     f'<summary><span class="dot" style="background:{STATUS_COLOURS.get(i.status, "#8c959f")}">'
                     f'</span><b>{esc(i.name)}</b> <span class="muted">{" · ".join(meta)}</span></summary>{body}</details>')
    return "".join(parts)


_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
main{padding:8px 24px 40px}section{background:#fff;border:1px solid #d0d7de;border-radius:8px;margin:14px 0;
padding:10px 16px}h2{font-size:16px;margin:6px 0 10px}.muted{color:#57606a}
.graph{max-width:100%;height:auto;font-family:inherit}
.timeline{display:grid;gap:4px}.trow{display:grid;grid-template-columns:180px 1fr 70px 90px;gap:8px;align-items:center}
.tname{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}.track{position:relative;height:18px;background:#eaeef2;
border-radius:4px}.bar{position:absolute;top:0;bottom:0;border-radius:4px;min-width:2px}.bar.none{display:none}
.tdur{text-align:right;font-variant-numeric:tabular-nums}
table{border-collapse:collapse}td,th{border-bottom:1px solid #d0d7de;padding:4px 10px;text-align:left}
td{font-variant-numeric:tabular-nums}.annotations{margin:0;padding-left:18px}.ann-error b{color:#cf222e}
.ann-warning b{color:#bf8700}details.step{border:1px solid #d0d7de;border-radius:6px;margin:6px 0}
details.step>summary{padding:6px 10px;cursor:pointer}.dot{display:inline-block;width:10px;height:10px;
border-radius:50%;margin-right:6px}pre{margin:0;padding:6px 12px;background:#0d1117;color:#e6edf3;
overflow-x:auto;font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace}details.group{margin:0 0 0 12px}
details.group>summary{background:#161b22;color:#e6edf3;padding:2px 8px;cursor:pointer;font:12px ui-monospace,monospace}
.s-success{color:#2da44e}.s-failed,.s-timed_out{color:#cf222e}.s-skipped{color:#8c959f}button{margin-right:6px}
"""
_SCRIPT = """
function fold(open){document.querySelectorAll('details').forEach(function(d){d.open=open;});}
"""


def render(title: str, subtitle: str, items: list[ReportItem], *, mask: Callable[[str], str],
           kind: str = "step") -> str:
    """The whole page. `kind` is "step" (a job) or "job" (a workflow)."""

    def esc(value: Any) -> str:
        return html.escape(mask(str(value)), quote=True)

    counts: dict[str, int] = {}
    for i in items:
        counts[i.status] = counts.get(i.status, 0) + 1
    tally = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'; '
        'script-src \'unsafe-inline\'; img-src data:">'
        f'<meta name="viewport" content="width=device-width"><title>{esc(title)}</title><style>{_STYLE}</style>'
        f'<script>{_SCRIPT}</script></head><body><header><h1>{esc(title)}</h1><div>{esc(subtitle)}</div></header><main>'
        f'<section><h2>{kind.capitalize()} graph</h2><p class="muted">{len(items)} {kind}s: {esc(tally)}</p>'
        f'{_graph(items, esc)}</section>'
        f'<section><h2>Timeline</h2>{_timeline(items, esc)}</section>'
        f'<section><h2>Resources</h2>{_resources(items, esc, kind)}</section>'
        f'<section><h2>Annotations</h2>{_annotations(items, esc)}</section>'
        f'<section><h2>Logs</h2><p><button onclick="fold(true)">expand all</button>'
        f'<button onclick="fold(false)">collapse all</button></p>{_logs(items, esc)}</section>'
        f'<p class="muted">made by runnerlib at {time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}</p>'
        '</main></body></html>\n')


def write_report(path: str, page: str) -> None:
    """Write the page atomically, mode 0600 like the step logs."""
    write_atomically(path, page.encode("utf-8"), mode=0o600)


def write_atomically(path: str, data: bytes, *, mode: int) -> None:
    """A temp file made with O_EXCL in the target's directory (never through a planted symlink), then renamed
    over `path`: a reader sees the old file or the new one, never half of it."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".runnerlib-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_tail(read: Callable[[], bytes]) -> str:
    """A log's text for the report: its last MAX_LOG_BYTES, marked when cut."""
    data = read()
    if len(data) > MAX_LOG_BYTES:
        data = b"[... earlier output cut: see the full log in artifacts/logs ...]\n" + data[-MAX_LOG_BYTES:]
    return data.decode("utf-8", "replace")


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 120:
        return f"{value:.2f}s"
    return f"{int(value // 60)}m{value % 60:04.1f}s"


def write_workflow_report(result: Any, path: str, *, mask: Callable[[str], str]) -> None:
    """The report of a local workflow run (`runnerlib workflow run --report`): the job graph (dependencies and
    triggers), a timeline of the jobs, each job's resources and its masked job.log."""
    items = []
    for node in result.nodes:
        log = ""
        if node.workspace is not None:
            try:
                with open(os.path.join(node.workspace, "job.log"), "rb") as f:
                    log = read_tail(f.read)
            except OSError:
                pass
        deps = list(node.depends_on) + ([node.triggered_by] if node.triggered_by and
                                        node.triggered_by not in node.depends_on else [])
        items.append(ReportItem(name=node.name, status=node.status, started=node.started, finished=node.finished,
                                exit_code=node.exit_code, depends_on=deps, reason=node.reason,
                                resources=getattr(node, "resources", None), log=log))
    workflow = result.workflow
    subtitle = (f"workflow {workflow.effective_id} · {'success' if result.ok else 'failed'} in "
                f"{result.duration:.2f}s · run dir {result.run_dir}")
    write_report(path, render(f"runnerlib workflow {workflow.name or workflow.effective_id}", subtitle, items,
                              mask=mask, kind="job"))
