"""The run report as one self-contained HTML page, from ``gather_report``'s data.

Tables and charts (inline SVG) are rendered here with every string from the data escaped; the
trace browser's questions travel as one JSON blob in a ``<script type="application/json">``
tag and are drawn by ``report.js`` with ``textContent`` only. CSS and JS are inlined: the page
loads nothing from anywhere.
"""

from __future__ import annotations

import json
from html import escape
from importlib import resources
from typing import Any

from steper_ray.report.gather import NOT_RUN, guarded_part
from steper_ray.report.svg import bar_chart, line_chart

# In the first bytes of every page: how `write_report` knows a file it may overwrite.
REPORT_MARK = '<meta name="generator" content="steper-ray run report">'
METRIC_COLUMNS = (("em", "EM"), ("f1", "F1"), ("acc", "Acc"), ("marked", "marked"), ("recall", "recall"))


def _asset(name: str) -> str:
    return resources.files("steper_ray.report").joinpath(name).read_text(encoding="utf-8")


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    """An HTML table; ``rows`` hold cells that are already HTML (escape data before)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _not_run(what: str) -> str:
    return f'<p class="not-run">{escape(what)}: {NOT_RUN}.</p>'


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{escape(title)}</h2>{body}</section>'


def header_html(run: dict[str, Any]) -> str:
    facts = [("run directory", run["run_dir"]), ("teacher", run["teacher"]), ("student", run["student"]),
             ("loss mode", run["loss_mode"]), ("passages per step (k)", run["k"]),
             ("training sets", ", ".join(run["train_sets"]) or "–"), ("dev sets", ", ".join(run["dev_sets"]) or "–"),
             ("report made", f"{run['generated']} by steper-ray {run['version']}")]
    if run.get("config_note"):
        facts.append(("settings", run["config_note"]))
    if not run["pipeline_summary"]:
        facts.append(("pipeline summary", "none (the pipeline has not finished; stages below as found)"))
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in facts)
    return f'<header><h1>steper-ray run report</h1><dl class="facts">{items}</dl></header>'


def stages_html(stages: list[dict[str, Any]]) -> str:
    rows = [[escape(s["stage"]), f'<span class="status {escape(s["status"].replace(" ", "-"))}">{escape(s["status"])}</span>',
             _num(s["seconds"], 1)] for s in stages]
    total = sum(s["seconds"] or 0.0 for s in stages)
    rows.append(["<b>total</b>", "", f"<b>{total:.1f}</b>"])
    return _section("stages", "Stages", _table(["stage", "status", "seconds"], rows, "stages"))


def retrieval_html(retrieval: dict[str, Any] | None) -> str:
    if retrieval is None:
        return _section("retrieval", "Retrieval recall", _not_run("retrieval_eval"))
    cols = [f"recall@{k}" for k in retrieval["cutoffs"]]
    rows = [[escape(name), _num(m.get("questions")), *(_num(m.get(c)) for c in cols)]
            for name, m in retrieval["datasets"].items()]
    return _section("retrieval", "Retrieval recall",
                    "<p>Share of gold paragraphs among the top k passages retrieved with the question alone; "
                    f"indexes: <code>data.corpus={escape(str(retrieval.get('corpus', 'questions')))}</code>.</p>"
                    + _table(["dev set", "questions", *cols], rows))


def generate_html(gen: dict[str, Any] | None) -> str:
    if gen is None:
        return _section("generate", "Teacher traces", _not_run("generate"))
    head = (f'<p><b>{gen["kept"]}</b> of <b>{gen["questions"]}</b> traces kept, <b>{gen["dropped"]}</b> dropped; '
            f'{gen["tokens"]} tokens generated; teacher {escape(str(gen["teacher"] or "–"))}'
            + (f' ({escape(gen["teacher_model"])})' if gen.get("teacher_model") else "") + ".</p>")
    if not gen["finished"]:
        head += '<p class="warn">generate has not finished: these are the questions written so far.</p>'
    parts = [head]
    ds_rows = [[escape(ds), _num(c["kept"]), _num(c["dropped"])] for ds, c in gen["per_dataset"].items()]
    parts.append("<h3>By dataset</h3>" + _table(["dataset", "kept", "dropped"], ds_rows))
    if gen["dropped"]:
        parts.append("<h3>Dropped by reason</h3>" + _table(
            ["reason", "traces"], [[escape(k), _num(n)] for k, n in gen["by_kind"].items()], "reasons"))
        detail = list(gen["by_reason"].items())
        parts.append("<details><summary>every reason in full</summary>" + _table(
            ["reason", "traces"], [[escape(k), _num(n)] for k, n in detail]) + "</details>")
    else:
        parts.append("<p>No trace was dropped.</p>")
    if gen["examples_per_task"]:
        parts.append("<h3>Step examples per task</h3>" + _table(
            list(gen["examples_per_task"]), [[_num(v) for v in gen["examples_per_task"].values()]]))
    return _section("generate", "Teacher traces", "".join(parts))


def train_html(train: dict[str, Any] | None) -> str:
    if train is None:
        return _section("train", "Training", _not_run("train"))
    final = train["final"]
    head = (f'<p>Loss mode <b>{escape(str(train["loss_mode"] or "–"))}</b>, {_num(train["steps"])} optimizer steps'
            + (f', {_num(train["examples_used"])} examples' if train.get("examples_used") is not None else "") + ".</p>")
    if not train["finished"]:
        head += '<p class="warn">train has not finished: the curves end at its last logged step.</p>'
    rows = [[escape(t), _num(final.get(f"loss_{t}")), _num(final.get(f"sigma_{t}")), _num(final.get(f"weight_{t}"))]
            for t in train["tasks"]]
    table = _table(["task", "final loss", "final sigma", "final weight"], rows) if final else ""
    charts = ""
    if train["sigma"]:
        charts += line_chart(train["sigma"], "sigma per task", "optimizer step")
    charts += line_chart(train["loss"], "token-mean cross-entropy per task", "optimizer step", log_y=True)
    return _section("train", "Training", head + table + f'<div class="charts">{charts}</div>')


def evaluation_html(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return _section("evaluate", "Dev metrics", _not_run("evaluate"))
    rows = []
    for run in runs:
        for ds, m in run["metrics"].items():
            rows.append([escape(run["label"]), escape(ds), _num(m.get("questions")),
                         *(_num(m.get(k)) for k, _ in METRIC_COLUMNS), _num(m.get("mean_steps"), 2),
                         _num(m.get("tokens_per_question"), 1), _num(m.get("errors")), _num(m.get("failures"))])
    table = _table(["mode", "dev set", "questions", *(h for _, h in METRIC_COLUMNS), "steps", "tokens/q",
                    "errors", "failures"], rows, "metrics")
    datasets = list(dict.fromkeys(ds for run in runs for ds in run["metrics"]))
    charts = "".join(
        bar_chart(datasets, {run["label"]: [(run["metrics"].get(ds) or {}).get(metric) for ds in datasets]
                             for run in runs}, f"{label} per dev set")
        for metric, label in (("acc", "Acc"), ("f1", "F1")))
    note = ("<p>EM and F1: the official HotpotQA scoring; Acc: a gold answer contained in the prediction; "
            "marked: answers that closed with the answer marker; recall: gold paragraphs retrieved at any step.</p>")
    return _section("evaluate", "Dev metrics", note + table + f'<div class="charts">{charts}</div>')


def browser_html(browser: dict[str, Any]) -> str:
    if not browser["questions"]:
        return _section("traces", "Trace browser", _not_run("generate and evaluate"))
    notes = "".join(f'<p class="warn">{escape(n)}</p>' for n in browser["notes"])
    controls = (
        '<div class="filters">'
        '<label>source <select id="f-source"><option value="">all</option></select></label>'
        '<label>dataset <select id="f-dataset"><option value="">all</option></select></label>'
        '<label>trace <select id="f-kept"><option value="">all</option><option value="kept">kept</option>'
        '<option value="dropped">dropped</option></select></label>'
        '<label>answer <select id="f-correct"><option value="">all</option><option value="correct">correct</option>'
        '<option value="wrong">wrong</option></select></label>'
        '<label>text <input id="f-search" type="search" placeholder="question, answer, id"></label>'
        '<span id="count" class="count"></span></div>'
    )
    legend = ('<p class="hint">Click a question for its steps: the query, the passages retrieved '
              '(<span class="gold-tag">gold</span> = a gold paragraph of the question), the sentence written '
              'and its tokens. Correct = a gold answer contained in the answer (Acc); kept and dropped '
              'apply to teacher traces.</p>')
    return _section("traces", "Trace browser", notes + legend + controls
                    + '<div id="questions"></div><button id="more" type="button" hidden>show more</button>')


def json_for_script(data: Any) -> str:
    """JSON that is safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` (so no
    ``</script>`` or ``<!--`` can end or change it); JSON.parse reads the escapes back."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def render_report(report: dict[str, Any]) -> str:
    """The whole page for ``gather_report``'s data."""
    nav = "".join(f'<a href="#{sid}">{escape(t)}</a>' for sid, t in (
        ("stages", "stages"), ("retrieval", "retrieval"), ("generate", "traces kept"), ("train", "training"),
        ("evaluate", "dev metrics"), ("traces", "trace browser")))
    problems = list(report.get("problems") or [])
    sections = [guarded_part(problems, what, _not_run(what), fn, report[key]) for key, what, fn in (
        ("stages", "the stage table", stages_html), ("retrieval", "the retrieval section", retrieval_html),
        ("generate", "the traces section", generate_html), ("train", "the training section", train_html),
        ("evaluation", "the dev metrics", evaluation_html), ("browser", "the trace browser", browser_html))]
    problems_html = ('<div class="problems"><b>Files that could not be read:</b><ul>'
                     + "".join(f"<li>{escape(p)}</li>" for p in problems) + "</ul></div>") if problems else ""
    body = "".join([header_html(report["run"]), f"<nav>{nav}</nav>", problems_html, *sections])
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{REPORT_MARK}'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">"
        f"<title>steper-ray report: {escape(report['run']['run_dir'])}</title>"
        f"<style>{_asset('report.css')}</style></head><body>{body}"
        f'<script type="application/json" id="trace-data">{json_for_script(report["browser"])}</script>'
        f"<script>{_asset('report.js')}</script></body></html>\n"
    )
