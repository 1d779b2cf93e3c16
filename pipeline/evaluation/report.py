"""Write the evaluation report: report.json (the numbers), report.md (for people), two PNG plots,
and a one-screen terminal summary.

Reads:  the report dict the evaluate stage builds (keys documented in docs/evaluate.md).
Writes: <model folder>/report.json, report.md, quality_vs_cost.png, coverage_vs_quality.png.

An unknown number (a teacher whose price is not in the table) is written as null and shown as
"unknown", never as 0.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.evaluation.calibration_check import calibration_sentence, fallback_sentence

PLOT_QUALITY_COST = "quality_vs_cost.png"
PLOT_COVERAGE = "coverage_vs_quality.png"
PLOT_LEARNING = "learning_curve.png"
PER_LABEL_SHOWN = 20  # labels in report.md's per-label table (all of them in report.json)


def fmt_usd(x: float | None) -> str:
    if x is None:
        return "unknown"
    return f"${x:.4f}" if x < 1 else f"${x:,.2f}"


def fmt_frac(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def fmt_s(x: float | None) -> str:
    if x is None:
        return "unknown"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def fmt_num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(what, student, teacher) lines shared by the Markdown table and the terminal table."""
    q, lat, cost = report["quality"], report["latency"], report["cost_per_1000"]
    rows = [(f"{q['metric']} (vs {report['reference']})", fmt_frac(q["student"]), fmt_frac(q["teacher"]))]
    h = report.get("headline") or {}
    if "gap_closed" in h:
        rows.append(("gap closed (vs majority baseline)", fmt_frac(h.get("gap_closed")), "100%"))
        rows.append(("Cohen's kappa with the teacher", fmt_num(h.get("kappa"), 2), "n/a"))
    names = {"accuracy", "macro_f1", "agreement_with_teacher", "json_valid", "field_exact_match", "rouge_l"}
    for name in sorted(set(report["metrics"]["student"]) & names - {q["metric"]}):
        rows.append((name, fmt_frac(report["metrics"]["student"][name]), fmt_frac(report["metrics"]["teacher"].get(name))))
    tp = report["throughput"]
    rows += [
        ("latency p50", fmt_s(lat["student"]["p50_s"]), fmt_s(lat["teacher"]["p50_s"])),
        ("latency p95", fmt_s(lat["student"]["p95_s"]), fmt_s(lat["teacher"]["p95_s"])),
        ("cost / 1,000 requests", fmt_usd(cost["student_usd"]), fmt_usd(cost["teacher_usd"])),
    ]
    if tp.get("teacher_rps"):
        rows.append((f"requests/s (batch {tp['batch_size']})", fmt_num(tp["student_rps"], 1), fmt_num(tp["teacher_rps"], 1)))
    return rows


def headline_sentence(report: dict[str, Any]) -> str:
    """The one sentence a reader takes away. A student at or below the majority-class baseline is
    called that; "gap closed" is the share of the teacher's margin over that baseline it keeps."""
    h = report.get("headline") or {}
    q = report["quality"]
    if "gap_closed" not in h:  # json / text tasks: the metric itself
        return (f"The student scores {fmt_frac(q['student'])} {q['metric']} against the teacher's "
                f"{fmt_frac(q['teacher'])} (vs {report['reference']}).")
    base = (f"majority-class baseline {fmt_frac(h['majority_baseline'])} ('{h['majority_label']}' always)"
            if h.get("majority_baseline") is not None else "no baseline")
    agree = f"agreement with the teacher {fmt_frac(h.get('agreement'))}, Cohen's kappa {fmt_num(h.get('kappa'), 2)}"
    verdict = h.get("verdict")
    if verdict == "teacher_at_or_below_baseline":
        return (f"The teacher itself does no better than the {base} ({q['metric']} {fmt_frac(q['teacher'])}), so "
                f"there is no margin to distil; {agree}.")
    if verdict == "teacher_margin_within_chance":
        tm = h["teacher_margin"]
        return (f"The teacher's margin over the {base} is within chance ({q['metric']} {fmt_frac(q['teacher'])}: "
                f"{tm['only_model_right']} inputs right that the baseline gets wrong, {tm['only_constant_right']} the "
                f"other way; McNemar), so there is no margin to distil and a share of it would be noise; the student "
                f"scores {fmt_frac(q['student'])}; {agree}.")
    if verdict == "student_at_or_below_baseline":
        return (f"The student is at or below the {base}: {q['metric']} {fmt_frac(q['student'])} vs the teacher's "
                f"{fmt_frac(q['teacher'])}; it has not learnt the task ({agree}).")
    if (h.get("gap_closed") or 0) > 1:
        return (f"The student does better than the teacher over the {base} ({q['metric']} {fmt_frac(q['student'])} "
                f"vs {fmt_frac(q['teacher'])}; gap closed {fmt_frac(h['gap_closed'])}); {agree}.")
    return (f"The student closes {fmt_frac(h.get('gap_closed'))} of the teacher's margin over the {base} "
            f"({q['metric']} {fmt_frac(q['student'])} vs {fmt_frac(q['teacher'])}); {agree}.")


def learning_sentence(report: dict[str, Any]) -> str | None:
    """Which weights early stopping saved, and why the start when a later step measured higher."""
    kept, curve = report.get("learning_kept"), report.get("learning_curve")
    if not kept or not curve:
        return None
    at = {p["step"]: p["agreement"] for p in curve}
    text = f"Early stopping saved the weights of step {kept['step']} ({fmt_frac(at.get(kept['step']))} held-out agreement)"
    vs = kept.get("against_start")
    if vs and vs.get("kept") == "start":
        text += (f": step {vs['best_step']} measured {fmt_frac(at.get(vs['best_step']))}, but it won {vs['won']} and lost "
                 f"{vs['lost']} of the held-out rows where the two differ (within chance) and was no closer to the "
                 "teacher by its training loss, so training did not prove a gain over its start")
    return text + "."


def _routing_sentence(report: dict[str, Any]) -> str:
    r = report["routing"]
    target = f"{fmt_frac(r['target'])} {report['quality']['metric']} ({r['target_source']})"
    if r["threshold"] is None:
        return f"The student reaches the target {target} on no share of traffic: send every request to the teacher."
    if r.get("pays") is False:
        return (f"Routing does not pay here: the student would answer {fmt_frac(r['coverage'])} of traffic, "
                f"for {fmt_usd(r['routed_cost_per_1000_usd'])} per 1,000 requests at {fmt_frac(r['routed_quality'])} "
                "overall, no better than the teacher alone: send everything to the teacher.")
    if r["coverage"] >= 1.0:
        return (f"The student reaches the target {target} on **all** traffic "
                f"({fmt_frac(r['student_quality'])}): it can answer every request alone, at "
                f"{fmt_usd(r['routed_cost_per_1000_usd'])} per 1,000 requests.")
    return (
        f"Answer with the student when its confidence ({r['confidence']}) is at least "
        f"**{r['threshold']:.4g}**: it then takes **{fmt_frac(r['coverage'])}** of traffic at "
        f"{fmt_frac(r['student_quality'])} {report['quality']['metric']} (target {target}); the rest goes to "
        f"the teacher, for {fmt_frac(r['routed_quality'])} overall at {fmt_usd(r['routed_cost_per_1000_usd'])} "
        "per 1,000 requests."
        + (f" (Threshold chosen on {r['chosen_on']} inputs, figures measured on the other {r['reported_on']}.)"
           if r.get("reported_on") else "")
    )


def render_markdown(report: dict[str, Any]) -> str:
    p, c = report["params"], report["counts"]
    calibration = " ".join(filter(None, (fallback_sentence(report.get("calibration_fallback")),
                                         calibration_sentence(report.get("teacher_calibration")))))
    learning = learning_sentence(report)
    lines = [
        f"# Evaluation: {report['task']} — student vs teacher",
        "",
        (f"Student `{p['model_version']}` ({p.get('method') or 'unknown method'}, dataset `{p.get('dataset_version') or 'unknown'}`) "
        f"vs teacher `{p['teacher']}`, on {c['inputs']} inputs from {p['eval_source']}. "
        f"Quality is measured against **{report['reference']}** answers."),
        "",
        f"**{headline_sentence(report)}**",
        "",
        *([calibration, ""] if calibration else []),
        "| | student | teacher |",
        "| --- | --- | --- |",
        *[f"| {a} | {b} | {t} |" for a, b, t in _rows(report)],
        "",
        (f"Student throughput on this machine: {fmt_num(report['throughput']['student_rps'], 1)} requests/s "
        f"(batch size {report['throughput']['batch_size']}); latency measured {report['latency']['student']['method']}. "
        f"Student cost: {report['cost_per_1000']['student_basis']}. Teacher cost: {report['cost_per_1000']['teacher_basis']}. "
        f"Teacher latency: {report['latency']['teacher']['source']}."),
        "",
        "## Routing",
        "",
        _routing_sentence(report),
        "",
        *_routing_table(report),
        "",
        f"![quality vs cost]({PLOT_QUALITY_COST}) ![coverage vs quality]({PLOT_COVERAGE})"
        + (f" ![learning curve]({PLOT_LEARNING})" if report.get("learning_curve") else ""),
        "",
        *([learning, ""] if learning else []),
        *_per_label_table(report),
        "## Counts",
        "",
        *[f"- {k}: {v}" for k, v in c.items()],
    ]
    if report.get("disagreements"):
        lines += ["", "## Where the student and the teacher disagree (first few)", "",
                  "| input | gold | teacher | student |", "| --- | --- | --- | --- |"]
        for d in report["disagreements"]:
            cells = [_cell(d["input"]), _cell(d.get("gold")), _cell(d["teacher"]), _cell(d["student"])]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _per_label_table(report: dict[str, Any]) -> list[str]:
    """Label tasks: where the student falls short, label by label (metrics.per_label), the labels the
    teacher answers most first; PER_LABEL_SHOWN of them, the rest in report.json."""
    rows = report.get("per_label")
    if not rows:
        return []
    shown = sorted(rows, key=lambda r: -r["teacher"])[:PER_LABEL_SHOWN]
    has_gold = any(r["gold"] is not None for r in rows)
    lines = ["## Per label", "",
             "| label |" + (" gold |" if has_gold else "") + " teacher answers it | student answers it "
             "| student agrees where the teacher answers it | teacher agrees where the student answers it "
             "| the student's answer there otherwise |",
             "| --- |" + (" --- |" if has_gold else "") + " --- | --- | --- | --- | --- |"]
    for r in shown:
        instead = r["student_instead"]
        other = "" if instead is None else f"{_cell(instead['answer'] or '(unparsed)', 40)} ({instead['count']})"
        lines.append(f"| {_cell(r['label'], 40)} |" + (f" {r['gold']} |" if has_gold else "")
                     + f" {r['teacher']} | {r['student']} | {fmt_frac(r['student_agrees'])} "
                     f"| {fmt_frac(r.get('teacher_agrees'))} | {other} |")
    if len(rows) > len(shown):
        lines.append(f"\n{len(rows) - len(shown)} more labels in report.json (`per_label`).")
    return lines + [""]


def _routing_table(report: dict[str, Any]) -> list[str]:
    """A few points of the curve (about a quarter, half, three quarters, all of the traffic)."""
    from pipeline.evaluation.routing import routed_cost_per_1000

    curve, cost = report["routing"]["curve"], report["cost_per_1000"]
    if not curve:
        return []
    picked = []
    for share in (0.25, 0.5, 0.75, 1.0):
        point = min(curve, key=lambda p: abs(p["coverage"] - share))
        if point not in picked:
            picked.append(point)
    lines = ["| student answers | when confidence ≥ | student quality there | overall quality | cost / 1,000 |",
             "| --- | --- | --- | --- | --- |"]
    for p in picked:
        usd = routed_cost_per_1000(p["coverage"], cost["student_with_confidence_usd"], cost["teacher_usd"])
        lines.append(f"| {fmt_frac(p['coverage'])} | {p['threshold']:.4g} | {fmt_frac(p['student_quality'])} | "
                     f"{fmt_frac(p['routed_quality'])} | {fmt_usd(usd)} |")
    return lines


def _cell(value: Any, width: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def plot_quality_vs_cost(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    cost, q, r = report["cost_per_1000"], report["quality"], report["routing"]
    fig, ax = plt.subplots(figsize=(6, 4))
    points = [("student", cost["student_usd"], q["student"]), ("teacher", cost["teacher_usd"], q["teacher"])]
    if r["threshold"] is not None:
        points.append((f"routed ({fmt_frac(r['coverage'])} student)", r["routed_cost_per_1000_usd"], r["routed_quality"]))
    from pipeline.evaluation.routing import routed_cost_per_1000

    # every threshold of the routing curve, as (cost, overall quality): the trade-off routing offers
    frontier = [(routed_cost_per_1000(p["coverage"], cost["student_with_confidence_usd"], cost["teacher_usd"]), p["routed_quality"])
                for p in r["curve"]]
    frontier = [(x, y) for x, y in frontier if x is not None]
    if frontier:
        ax.plot([x for x, _ in frontier], [y for _, y in frontier], color="grey", alpha=0.5, linewidth=1,
                label="routed, at each threshold")
        ax.legend(fontsize=8, loc="lower right")
    unknown = []
    for name, x, y in points:
        if x is None or y is None:
            unknown.append(name)
            continue
        ax.scatter([x], [y], s=60)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4))
    ax.set_xlabel("USD per 1,000 requests")
    ax.set_ylabel(f"{q['metric']} (vs {report['reference']})")
    title = f"{report['task']}: quality vs cost"
    if unknown:
        title += f"\n(cost unknown, not plotted: {', '.join(unknown)})"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_coverage_vs_quality(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r, metric = report["routing"], report["quality"]["metric"]
    curve = r["curve"]
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [pt["coverage"] for pt in curve]
    ax.plot(xs, [pt["student_quality"] for pt in curve], marker=".", label="student, on the share it answers")
    # coverage 0 is the teacher alone
    ax.plot([0.0, *xs], [report["quality"]["teacher"], *[pt["routed_quality"] for pt in curve]], marker=".",
            label="routed: student + teacher for the rest")
    ax.axhline(r["target"], color="grey", linestyle="--", label=f"target ({r['target_source']})")
    if r["threshold"] is not None:
        ax.axvline(r["coverage"], color="green", linestyle=":", label=f"threshold {r['threshold']:.3g}")
    ax.set_xlabel("coverage: share of traffic the student answers")
    ax.set_ylabel(metric)
    ax.set_xlim(0, 1.02)
    ax.set_title(f"{report['task']}: coverage vs quality\n(confidence: {r['confidence']})", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_learning_curve(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = report["learning_curve"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p["step"] for p in curve], [p["agreement"] for p in curve], marker=".")
    kept = (report.get("learning_kept") or {}).get("step")
    kept = max(curve, key=lambda p: p["agreement"])["step"] if kept is None else kept  # a report from before
    ax.axvline(kept, color="green", linestyle=":", label=f"kept: step {kept}")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("agreement with the teacher (held-out split)")
    ax.set_title(f"{report['task']}: learning curve")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict[str, Any], folder: Path, extra_files: dict[str, Path] | None = None) -> dict[str, str]:
    """Write the four files; returns their paths. report.json goes last, through a rename, so its
    presence means the report is complete."""
    folder = Path(folder)
    files = {
        "report_md": folder / "report.md",
        "report_json": folder / "report.json",
        "quality_vs_cost_png": folder / PLOT_QUALITY_COST,
        "coverage_vs_quality_png": folder / PLOT_COVERAGE,
    }
    report["files"] = {k: str(v) for k, v in {**files, **(extra_files or {})}.items()}
    plot_quality_vs_cost(report, files["quality_vs_cost_png"])
    plot_coverage_vs_quality(report, files["coverage_vs_quality_png"])
    if report.get("learning_curve"):
        files["learning_curve_png"] = folder / PLOT_LEARNING
        report["files"]["learning_curve_png"] = str(files["learning_curve_png"])
        plot_learning_curve(report, files["learning_curve_png"])
    files["report_md"].write_text(render_markdown(report), encoding="utf-8")
    tmp = files["report_json"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(files["report_json"])
    return report["files"]


def print_summary(report: dict[str, Any], console=None) -> None:
    """One screen: the comparison table, the routing advice, and where the files are."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"{report['task']}: student vs teacher on {report['counts']['inputs']} inputs")
    table.add_column("")
    table.add_column("student", justify="right")
    table.add_column("teacher", justify="right")
    for row in _rows(report):
        table.add_row(*row)
    console.print(table)
    cost = report["summary"].get("cost_ratio")
    console.print(headline_sentence(report)
                  + (f" The student costs 1/{cost:.1f} of the teacher per request." if cost else ""))
    console.print(_routing_sentence(report).replace("**", ""))
    for line in (fallback_sentence(report.get("calibration_fallback")),
                 calibration_sentence(report.get("teacher_calibration"))):
        if line:
            console.print(line)
    console.print(f"Report: {report['files']['report_md']}")
