"""A regression report as a terminal table, JUnit XML, or a Markdown summary.

JUnit XML follows the shape CI servers read (Jenkins, GitLab, GitHub test
reporters): ``testsuites > testsuite > testcase [> failure]``, one testcase
per metric x statistic plus one for unanswered turns, so a regression shows up
in a CI's test view under its own name. The Markdown summary is meant for
``$GITHUB_STEP_SUMMARY``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from agent.metrics.regress import Comparison, Mode, Report, Verdict

__all__ = ["evidence", "format_table", "junit_xml", "markdown_summary", "verdict_line"]

_MARK = {
    Verdict.IMPROVED: "improved",
    Verdict.UNCHANGED: "unchanged",
    Verdict.REGRESSED: "REGRESSED",
    Verdict.MISSING: "MISSING",
}
_EMOJI = {
    Verdict.IMPROVED: "🟢 improved",
    Verdict.UNCHANGED: "⚪ unchanged",
    Verdict.REGRESSED: "🔴 **regressed**",
    Verdict.MISSING: "🔴 **missing**",
}


def _num(value: float | None, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def _signed(value: float | None) -> str:
    if value is None:
        return "-"
    # Exact mode flags changes of a few µs: show them rather than "+0.0".
    return format(value, "+.3f" if 0 < abs(value) < 0.05 else "+.1f")


def evidence(row: Comparison, alpha: float) -> str:
    """The numbers behind a verdict, in one line."""
    parts = []
    if row.mode is Mode.EXACT:
        parts.append("exact")
    elif row.ci_ms is not None:
        level = round(100 * (1 - alpha), 1)
        parts.append(f"{level:g}% CI [{row.ci_ms[0]:+.2f}, {row.ci_ms[1]:+.2f}] ms")
        if row.p_value is not None:
            parts.append(f"p={row.p_value:.3g}")
        if row.effect is not None:
            parts.append(f"Cliff's d={row.effect:+.2f}")
    parts.append(f"n={row.n_baseline}/{row.n_candidate}")
    if row.note:
        parts.append(row.note)
    return ", ".join(parts)


def _message(row: Comparison) -> str:
    """``voice_to_voice p95 regressed: 771.7 → 811.7 ms (+40.0 ms, +5.2%), allowed +0.0 ms``."""
    if row.candidate is None:
        return f"{row.metric} {row.stat} missing: baseline {row.baseline:.1f} ms, no candidate samples"
    pct = "" if row.delta_pct is None else f", {row.delta_pct:+.1f}%"
    return (
        f"{row.metric} {row.stat} {row.verdict.value}: {row.baseline:.1f} → {row.candidate:.1f} ms "
        f"({row.delta_ms:+.1f} ms{pct}), allowed +{row.allowance_ms:.1f} ms"
    )


def verdict_line(report: Report) -> str:
    regressed = report.count(Verdict.REGRESSED)
    missing = report.count(Verdict.MISSING)
    counts = (
        f"{regressed} regressed, {missing} missing, {report.count(Verdict.IMPROVED)} improved, "
        f"{report.count(Verdict.UNCHANGED)} unchanged"
    )
    if report.turns.failed:
        counts += "; more unanswered turns than the baseline"
    return f"{'FAIL' if report.failed else 'PASS'}: {counts}"


def _mode_line(report: Report) -> str:
    if report.mode is Mode.EXACT:
        return "exact comparison (virtual time: no noise, any change > 1 µs counts)"
    level = round(100 * (1 - report.alpha), 1)
    return (
        f"statistical comparison (alpha={report.alpha:g}: {level:g}% bootstrap CI of the difference "
        "and one-sided Mann-Whitney U)"
    )


def format_table(report: Report, subject: str = "") -> str:
    """The readable terminal table, with warnings and a final PASS/FAIL line."""
    header = ("metric", "stat", "baseline", "candidate", "Δ ms", "Δ %", "budget", "verdict", "evidence")
    lines: list[tuple[str, ...]] = [header]
    for row in report.rows:
        lines.append(
            (
                row.metric,
                row.stat,
                _num(row.baseline),
                _num(row.candidate),
                _signed(row.delta_ms),
                "-" if row.delta_pct is None else f"{row.delta_pct:+.1f}%",
                f"+{row.allowance_ms:.1f}",
                _MARK[row.verdict],
                evidence(row, report.alpha),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {2, 3, 4, 5, 6}  # numbers line up on the right

    def fmt(line: tuple[str, ...]) -> str:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    out = []
    if subject:
        out.append(f"regression check: {subject}")
    out.append(_mode_line(report))
    out.extend(fmt(line) for line in lines)
    out.append(f"{report.turns.describe()} ({'FAIL' if report.turns.failed else 'ok'})")
    out.extend(f"warning: {w}" for w in report.warnings)
    out.append(verdict_line(report))
    return "\n".join(out)


def junit_xml(report: Report, suite: str = "vlt.regress", subject: str = "") -> str:
    """JUnit XML: a testcase per metric x statistic, ``failure`` for each regression."""
    cases: list[ET.Element] = []
    failures = 0
    for row in report.rows:
        case = ET.Element("testcase", classname=f"{suite}.{row.metric}", name=row.stat, time="0")
        if row.failed:
            failures += 1
            kind = f"Latency{row.verdict.title()}"
            failure = ET.SubElement(case, "failure", message=_message(row), type=kind)
            failure.text = evidence(row, report.alpha)
        else:
            ET.SubElement(case, "system-out").text = f"{_message(row)}; {evidence(row, report.alpha)}"
        cases.append(case)
    turns = ET.Element("testcase", classname=f"{suite}.turns", name="answered", time="0")
    if report.turns.failed:
        failures += 1
        ET.SubElement(turns, "failure", message=report.turns.describe(), type="UnansweredTurns")
    cases.append(turns)
    counts = {"tests": str(len(cases)), "failures": str(failures), "errors": "0", "skipped": "0", "time": "0"}
    root = ET.Element("testsuites", {"name": "vlt regress", **counts})
    testsuite = ET.SubElement(root, "testsuite", {"name": suite, **counts})
    properties = ET.SubElement(testsuite, "properties")
    ET.SubElement(properties, "property", name="mode", value=report.mode.value)
    ET.SubElement(properties, "property", name="alpha", value=f"{report.alpha:g}")
    if subject:
        ET.SubElement(properties, "property", name="subject", value=subject)
    testsuite.extend(cases)
    if report.warnings:
        ET.SubElement(testsuite, "system-err").text = "\n".join(report.warnings)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_summary(report: Report, subject: str = "") -> str:
    """A Markdown section for ``$GITHUB_STEP_SUMMARY``."""
    title = "✅ no latency regression" if not report.failed else "❌ latency regression"
    out = [f"### vlt regress: {title}", ""]
    if subject:
        out += [_md(subject), ""]
    out += [
        _md(_mode_line(report)),
        "",
        "| metric | stat | baseline ms | candidate ms | Δ ms | Δ % | budget ms | verdict | evidence |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for row in report.rows:
        pct = "-" if row.delta_pct is None else f"{row.delta_pct:+.1f}%"
        out.append(
            f"| `{row.metric}` | {row.stat} | {_num(row.baseline)} | {_num(row.candidate)} | "
            f"{_signed(row.delta_ms)} | {pct} | +{row.allowance_ms:.1f} | {_EMOJI[row.verdict]} | "
            f"{_md(evidence(row, report.alpha))} |"
        )
    out += ["", f"{report.turns.describe()}.", ""]
    out += [f"> ⚠️ {_md(w)}" for w in report.warnings]
    if report.warnings:
        out.append("")
    out += [f"**{verdict_line(report)}**", ""]
    return "\n".join(out)
