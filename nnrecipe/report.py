"""The run's story: in the terminal, as report.md (renders on GitHub, pictures linked from the
run directory) and as report.html (one self-contained file: pictures embedded as data URIs).

Every verdict is there with observed vs. expected; every warn and fail with the recipe's
advice for it (the verdict's hint) and its pictures; each stage opens with the recipe's words.
"""

from __future__ import annotations

import base64
import html as _html
import json
from pathlib import Path
from typing import Sequence

from nnrecipe.verdict import STATUS_MARK, Status, Verdict, short

ADVICE = {Status.FAIL: "fail", Status.WARN: "warn"}


def _stages(verdicts: Sequence[Verdict], order: Sequence[str]) -> list[str]:
    return [s for s in order if any(v.stage == s for v in verdicts)] + sorted({v.stage for v in verdicts} - set(order))


def _recipe(stage: str) -> str:
    from nnrecipe.stages import STAGE_NAMES, get_stage

    return get_stage(stage).recipe if stage in STAGE_NAMES else ""


def _counts(verdicts: Sequence[Verdict]) -> dict[Status, int]:
    return {s: sum(v.status is s for v in verdicts) for s in Status}


def _json(value) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def _pngs(root: Path, stage: str) -> list[Path]:
    return sorted((root / stage).glob("*.png"))


# ----------------------------------------------------------------------------- markdown


def markdown(root: Path, verdicts: Sequence[Verdict], order: Sequence[str]) -> str:
    root = Path(root)
    c = _counts(verdicts)
    out = [
        f"# nnrecipe report: {root.name}",
        "",
        "**" + " · ".join(f"{c[s]} {s.value}" for s in Status) + "**",
        "",
        f"Spec: [spec.yaml](spec.yaml) · environment: [env.json](env.json) · "
        f"TensorBoard: `tensorboard --logdir {root / 'tb'}` · self-contained: [report.html](report.html)",
        "",
    ]
    stages = _stages(verdicts, order)
    out += ["| stage | pass | warn | fail | skip |", "|---|---|---|---|---|"]
    for stage in stages:
        sc = _counts([v for v in verdicts if v.stage == stage])
        out.append(f"| [{stage}](#{stage}) | " + " | ".join(str(sc[s]) for s in Status) + " |")
    out.append("")
    for stage in stages:
        vs = [v for v in verdicts if v.stage == stage]
        out += [f"## {stage}", ""]
        if _recipe(stage):
            out += [f"> *{_recipe(stage)}*", ""]
        out += ["| check | status | observed | expected | message |", "|---|---|---|---|---|"]
        for v in vs:
            cells = [v.check, STATUS_MARK[v.status], short(v.observed, 80), short(v.expected, 60), v.message]
            out.append("| " + " | ".join(_cell(x) for x in cells) + " |")
        out.append("")
        for v in (v for v in vs if v.status in ADVICE):
            out += [f"#### {STATUS_MARK[v.status]} {v.check}", "", v.message, ""]
            out += [f"- **observed**: `{_json(v.observed)}`", f"- **expected**: {v.expected}"]
            if v.hint:
                out.append(f"- **what to do**: {v.hint}")
            out += [f"- **see**: [{a}]({a})" for a in v.artifacts]
            out.append("")
        pngs = _pngs(root, stage)
        if pngs:
            out += ["<details open><summary>pictures</summary>", ""]
            for png in pngs:
                rel = png.relative_to(root).as_posix()
                out += [f"**{png.stem.replace('_', ' ')}**", "", f"![{png.stem}]({rel})", ""]
            out += ["</details>", ""]
    return "\n".join(out)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# ----------------------------------------------------------------------------- html

CSS = """
body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;width:100%;margin:.5em 0 1em;table-layout:auto}td,th{border:1px solid #ddd;padding:4px 6px;vertical-align:top;text-align:left}
th{background:#f4f4f4;text-align:left}code{font-size:12px;word-break:break-all}
.pass{color:#186a3b}.warn{color:#9a6700}.fail{color:#b3261e;font-weight:bold}.skip{color:#777}
.advice{border-left:4px solid #ccc;padding:.3em .8em;margin:.6em 0}.advice.fail{border-color:#b3261e}
.advice.warn{border-color:#9a6700}img{max-width:100%;border:1px solid #eee;margin:.3em 0}
blockquote{color:#555;margin:.4em 0 .8em;font-style:italic}
"""
# Marks the page once every picture has loaded (or failed), so a headless browser can check it:
# <body data-images="loaded/total" data-broken="n" data-js-errors="n">.
SCRIPT = """
(function(){var errs=0;window.addEventListener('error',function(e){if(e.target===window||!e.target.tagName){errs++;}
document.body.dataset.jsErrors=errs;},true);
function done(){var imgs=[].slice.call(document.images);var ok=imgs.filter(function(i){return i.complete&&i.naturalWidth>0;});
document.body.dataset.images=ok.length+'/'+imgs.length;document.body.dataset.broken=imgs.length-ok.length;
document.body.dataset.jsErrors=errs;}
window.addEventListener('load',done);})();
"""


def _body(root: Path, verdicts: Sequence[Verdict], order: Sequence[str]) -> list[str]:
    """The report's content: counts, the stage table, each stage's verdicts, advice and pictures."""
    e = _html.escape
    c = _counts(verdicts)
    body = [
        f"<h1>nnrecipe report: {e(root.name)}</h1>",
        "<p><b>" + " · ".join(f'<span class="{s.value}">{c[s]} {s.value}</span>' for s in Status) + "</b></p>",
    ]
    stages = _stages(verdicts, order)
    body.append("<table><tr><th>stage</th>" + "".join(f"<th>{s.value}</th>" for s in Status) + "</tr>")
    for stage in stages:
        sc = _counts([v for v in verdicts if v.stage == stage])
        body.append(
            f'<tr><td><a href="#{e(stage)}">{e(stage)}</a></td>'
            + "".join(f"<td>{sc[s]}</td>" for s in Status)
            + "</tr>"
        )
    body.append("</table>")
    for stage in stages:
        vs = [v for v in verdicts if v.stage == stage]
        body.append(f'<h2 id="{e(stage)}">{e(stage)}</h2>')
        if _recipe(stage):
            body.append(f"<blockquote>{e(_recipe(stage))}</blockquote>")
        body.append("<table><tr><th>check</th><th>status</th><th>message</th><th>observed</th><th>expected</th></tr>")
        for v in vs:
            body.append(
                f'<tr><td>{e(v.check)}</td><td class="{v.status.value}">{v.status.value}</td><td>{e(v.message)}</td>'
                f"<td><code>{e(_json(v.observed))}</code></td><td>{e(str(v.expected or ''))}</td></tr>"
            )
        body.append("</table>")
        for v in (v for v in vs if v.status in ADVICE):
            body.append(
                f'<div class="advice {v.status.value}"><b>{e(v.check)}</b> ({v.status.value}): {e(v.message)}'
                + (f"<br><b>what to do:</b> {e(v.hint)}" if v.hint else "")
                + "</div>"
            )
        for png in _pngs(root, stage):
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            body.append(
                f'<h4>{e(png.stem.replace("_", " "))}</h4><img alt="{e(png.stem)}" src="data:image/png;base64,{data}">'
            )
    return body


def html(root: Path, verdicts: Sequence[Verdict], order: Sequence[str]) -> str:
    """report.html: one self-contained page."""
    root = Path(root)
    title = _html.escape(root.name)
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>nnrecipe report: {title}</title><style>{CSS}</style></head><body>"
        + "\n".join(_body(root, verdicts, order))
        + f"<script>{SCRIPT}</script></body></html>\n"
    )


def fragment(root: Path, verdicts: Sequence[Verdict], order: Sequence[str]) -> str:
    """The same content for a notebook cell (RecipeResult._repr_html_): a <div> whose styles
    apply inside it only, so the notebook's own look is left alone."""
    # two classes: JupyterLab's rules for tables in outputs (right-aligned cells) weigh (0,2,1)
    css = scoped(CSS, "div.nnrecipe.nnrecipe-report")
    return (
        f'<div class="nnrecipe nnrecipe-report"><style>{css}</style>'
        + "\n".join(_body(Path(root), verdicts, order))
        + "</div>"
    )


def scoped(css: str, scope: str) -> str:
    """Every rule of `css` limited to elements inside `scope` (body's rules go to the scope itself)."""
    rules = []
    for rule in css.replace("\n", "").split("}"):
        if "{" not in rule:
            continue
        selectors, decl = rule.split("{", 1)
        sel = ",".join(scope if s.strip() == "body" else f"{scope} {s.strip()}" for s in selectors.split(","))
        rules.append(f"{sel}{{{decl}}}")
    return "".join(rules)


# ----------------------------------------------------------------------------- terminal


def story(console, root: Path, verdicts: Sequence[Verdict], order: Sequence[str]) -> None:
    from nnrecipe.verdict import print_verdicts

    c = _counts(verdicts)
    console.print(f"[bold]nnrecipe report[/] {Path(root).name}: " + " · ".join(f"{c[s]} {s.value}" for s in Status))
    for stage in _stages(verdicts, order):
        vs = [v for v in verdicts if v.stage == stage]
        print_verdicts(console, vs, title=f"{stage} — {_recipe(stage)}" if _recipe(stage) else stage)
        for v in (v for v in vs if v.status in ADVICE and v.hint):
            console.print(f"  [bold]{v.check}[/] ({v.status.value}) what to do: {v.hint}", highlight=False)


def write(root: Path, verdicts: Sequence[Verdict], order: Sequence[str]) -> tuple[Path, Path]:
    from nnrecipe import atomic

    root = Path(root)
    md, page = root / "report.md", root / "report.html"
    atomic.write_text(md, markdown(root, verdicts, order))
    atomic.write_text(page, html(root, verdicts, order))
    return md, page
