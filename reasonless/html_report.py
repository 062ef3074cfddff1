"""A report's ``index.html``: the tables and plots of its ``report.md``, and a gallery of rendered failures.

One static page next to ``report.md``, opened from disk: no script, no network, every file it shows in the same
folder (the plots the report wrote, ``gallery/``). The Markdown is the report's own text converted here (headings,
paragraphs, pipe tables with their alignment, images, links, ``code``, **bold**, _emphasis_ — what the report
writers emit), so the page says exactly what ``report.md`` says; a link to a ``report.md`` becomes one to the
``index.html`` beside it.

Gallery (:func:`gallery`), per suite and evaluation: the first N invalid plans and the first N valid plans with an
invalid trace (primary verifier mode; a trace-free arm has no trace to fail), each drawn by
:mod:`reasonless.render` (the suite example's A* trace beside the model's response, the first error marked) into
``gallery/<label>/<suite>-<index>.svg``. Each links to its eval record, copied as
``gallery/<label>/<suite>-<index>.json`` (the folder stays self-contained); the caption names the source file, the
record number and the `reasonless render` command that draws it again. A suite whose corpus is no longer where its
summary says is listed with its records, undrawn, and says why.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Sequence

from .atomic import atomic_file

GALLERY = 6

CSS = """
body { font-family: system-ui, -apple-system, "DejaVu Sans", Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1, h2, h3 { line-height: 1.2; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f2f2f2; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code { background: #f4f4f4; padding: 0 0.2em; border-radius: 3px; }
img { max-width: 100%; height: auto; }
figure { margin: 0.5em 0 1.5em; }
.gallery { display: flex; flex-wrap: wrap; gap: 1em; }
.gallery figure { margin: 0; width: 560px; border: 1px solid #ddd; padding: 0.5em; }
.gallery figcaption { font-size: 0.85em; }
.note { color: #666; font-style: italic; }
"""


# ---------------------------------------------------------------------------------------------------- Markdown
def _inline(text: str) -> str:
    """Escapes and formats one line's inline Markdown: `code`, **bold**, _emphasis_, [text](link)."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if len(part) >= 2 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        s = html.escape(part)
        s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
        s = re.sub(r"(?<![\w])_(.+?)_(?![\w])", r"<em>\1</em>", s)
        s = re.sub(r"\[([^\]]*)\]\(([^)\s]+)\)", lambda m: f'<a href="{_target(m.group(2))}">{m.group(1)}</a>', s)
        out.append(s)
    return "".join(out)


def _target(href: str) -> str:
    """A link of the page: one to a report.md goes to the index.html beside it."""
    return re.sub(r"(^|/)report\.md$", r"\1index.html", href)


def _cells(line: str) -> list[str]:
    """The cells of a pipe-table row (``\\|`` is a literal bar)."""
    inner = line.strip()[1:-1] if line.strip().endswith("|") else line.strip()[1:]
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]


def _table(lines: list[str]) -> str:
    header = _cells(lines[0])
    aligns = ["num" if c.endswith(":") else "" for c in _cells(lines[1])] if len(lines) > 1 else []
    attr = lambda k: f' class="{aligns[k]}"' if k < len(aligns) and aligns[k] else ""  # noqa: E731
    out = ["<table>", "<thead><tr>" + "".join(f"<th{attr(k)}>{_inline(c)}</th>" for k, c in enumerate(header))
           + "</tr></thead>", "<tbody>"]
    for line in lines[2:]:
        out.append("<tr>" + "".join(f"<td{attr(k)}>{_inline(c)}</td>" for k, c in enumerate(_cells(line)))
                   + "</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


def markdown_html(md: str) -> str:
    """HTML of the Markdown the report writers emit (blocks separated by blank lines)."""
    blocks, current = [], []
    for line in md.splitlines():
        if line.strip():
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    out = []
    for block in blocks:
        first = block[0]
        heading = re.match(r"^(#{1,6})\s+(.*)$", first)
        image = re.match(r"^!\[([^\]]*)\]\(([^)\s]+)\)$", first.strip())
        if heading and len(block) == 1:
            level = len(heading.group(1))
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif all(ln.lstrip().startswith("|") for ln in block):
            out.append(_table(block))
        elif image and len(block) == 1:
            alt, src = html.escape(image.group(1), quote=True), html.escape(image.group(2), quote=True)
            out.append(f'<figure><img src="{src}" alt="{alt}"></figure>')
        else:
            out.append("<p>" + " ".join(_inline(ln.strip()) for ln in block) + "</p>")
    return "\n".join(out)


def write_index(out: str | Path, md: str, extra_html: str = "") -> Path:
    """Writes ``out/index.html`` from the report's Markdown (its first heading is the page title) and appended
    HTML; atomically."""
    out = Path(out)
    title = next((ln.lstrip("#").strip() for ln in md.splitlines() if ln.startswith("#")), "Report")
    page = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title.replace('`', ''))}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + markdown_html(md) + "\n" + extra_html + "\n</body>\n</html>\n")
    path = out / "index.html"
    with atomic_file(path, "w") as f:
        f.write(page)
    return path


# ---------------------------------------------------------------------------------------------------- gallery
def failures(rows: list[dict], mode: str, trace: bool) -> list[tuple[str, list[dict]]]:
    """The two kinds of failure the gallery shows: invalid plans, and valid plans with invalid traces."""
    kinds = [("Invalid plans", [r for r in rows if not r[mode]["plan_valid"]])]
    if trace:
        kinds.append(("Valid plans with invalid traces",
                      [r for r in rows if r[mode]["plan_valid"] and not r[mode]["trace_valid"]]))
    return kinds


def gallery(evals: Sequence, suites: Sequence[str], mode: str, out: str | Path, per_kind: int = GALLERY,
            traceless: set | frozenset = frozenset()) -> str:
    """Draws the gallery's failures under ``out/gallery/`` and returns its HTML (one section per suite).
    `evals` are :class:`reasonless.report.Evaluation` objects with their labels set."""
    from .render import eval_summary, render_svg, eval_scene
    from .report import slug

    out = Path(out)
    corpora: dict = {}
    summaries = {e.path: eval_summary(e.path) for e in evals}
    H = ["<h2>Gallery of failures</h2>",
         f"<p>Per suite and evaluation, the first {per_kind} invalid plans and the first {per_kind} valid plans whose "
         f"trace is invalid ({html.escape(mode)} verifier): the suite example's A* trace beside the model's response, "
         "replayed up to its first error (ringed and named), invalid operations dashed. Each links to its record of "
         "the eval file, copied beside the picture.</p>"]
    for s in suites:
        H.append(f"<h2>Gallery: suite <code>{html.escape(s)}</code></h2>")
        for e in evals:
            rows = e.suites.get(s)
            if not rows:
                continue
            number = {id(r): k for k, r in enumerate(e.rows)}
            folder = Path("gallery") / slug(e.label)
            H.append(f"<h3>{html.escape(e.label)}</h3>")
            problem = None
            for title, picked in failures(rows, mode, e.label not in traceless):
                H.append(f"<h4>{title}: {min(per_kind, len(picked))} of {len(picked)}</h4>")
                if not picked:
                    H.append('<p class="note">none</p>')
                    continue
                H.append('<div class="gallery">')
                for row in picked[:per_kind]:
                    k = number[id(row)]
                    stem = folder / f"{slug(s)}-{row.get('index', k)}"
                    (out / folder).mkdir(parents=True, exist_ok=True)
                    with atomic_file(out / stem.with_suffix(".json"), "w") as f:
                        json.dump(row, f, indent=1)
                        f.write("\n")
                    img = ""
                    if problem is None:
                        try:
                            svg = render_svg(eval_scene(e.path, k, row, summaries[e.path], mode, corpora))
                        except (ValueError, OSError) as err:
                            problem = str(err)
                        else:
                            with atomic_file(out / stem.with_suffix(".svg"), "w") as f:
                                f.write(svg)
                            src = html.escape(stem.with_suffix(".svg").as_posix(), quote=True)
                            img = f'<a href="{src}"><img src="{src}" alt="suite {html.escape(s)} example ' \
                                  f'{row.get("index")}"></a>'
                    err = row[mode]["first_error"]
                    H.append("<figure>" + img + "<figcaption>"
                             + f"example {row.get('index')}; first error: <code>{html.escape(str(err))}</code>"
                             + (f" at operation {row[mode]['first_error_at']}" if err else "")
                             + f"; <a href=\"{html.escape(stem.with_suffix('.json').as_posix(), quote=True)}\">"
                             + f"record {k}</a> of <code>{html.escape(e.path.name)}</code>"
                             + f" (<code>reasonless render {html.escape(e.path.name)} --index {k}</code>)"
                             + "</figcaption></figure>")
                H.append("</div>")
            if problem is not None:
                H.append(f'<p class="note">Not drawn: {html.escape(problem)}</p>')
    return "\n".join(H)
