"""``psi-share audit report``: what left the node, to whom, when, under which protection.

Built from the audit log alone (verify it first): a Markdown file and a
self-contained HTML page (inline CSS and SVG, no external assets) with

* the log's verification verdict and head;
* bytes sent per peer per day, as a table and a stacked bar chart;
* per peer, protocol and step: messages, bytes, first and last time, and
  what the message is and what protects its content, as registered with its
  message check (:func:`.messages.describe`), with the logged bounds
  (false-positive rate, mode, set sizes);
* a disclosure ledger per peer: how many queries it made against us, how
  many of our items those queries covered, and every result it received.
"""

from __future__ import annotations

import datetime as dt
import html
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..timefmt import utc_text
from .messages import describe
from .verify import VerifyResult

_PARAM_KEYS = ("mode", "curve", "false_positive_rate", "set_size", "requester_items", "setup_items")


def _day(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.timezone.utc).strftime("%Y-%m-%d")


def _when(ns: int) -> str:
    return utc_text(ns / 1e9)


@dataclass
class _Flow:
    messages: int = 0
    bytes: int = 0
    first: int = 0
    last: int = 0
    params: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


@dataclass
class _Ledger:
    queries: int = 0  # sessions the peer opened against us
    queried_items: int = 0  # items the peer's queries held
    our_items_covered: int = 0  # sum over queries of our items in the filter they got
    largest_filter: int = 0
    results: list[tuple[int, str, str, dict[str, Any]]] = field(default_factory=list)


@dataclass
class AuditReport:
    node: str
    generated: str
    verification: str
    per_day: dict[str, dict[str, int]]  # day -> peer -> bytes sent
    flows: dict[tuple[str, str, str], _Flow]  # (peer, protocol, step)
    received: dict[str, tuple[int, int]]  # peer -> (messages, bytes)
    ledger: dict[str, _Ledger]
    transcripts: int = 0

    @property
    def peers(self) -> list[str]:
        return sorted({p for day in self.per_day.values() for p in day} | set(self.ledger))


def build_report(node: str, entries: Iterable[Mapping[str, Any]], verified: VerifyResult, now_ns: int) -> AuditReport:
    per_day: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    flows: dict[tuple[str, str, str], _Flow] = defaultdict(_Flow)
    received: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    ledger: dict[str, _Ledger] = defaultdict(_Ledger)
    transcripts = 0
    for e in entries:
        kind, peer, when = e.get("type"), str(e.get("peer", "")), int(e.get("time_ns", 0))
        if kind == "sent":
            per_day[_day(when)][peer] += int(e.get("bytes", 0))
            flow = flows[(peer, str(e.get("protocol")), str(e.get("step")))]
            flow.messages += 1
            flow.bytes += int(e.get("bytes", 0))
            flow.first = flow.first or when
            flow.last = when
            for key in _PARAM_KEYS:
                if key in (e.get("params") or {}):
                    flow.params[key].add(str(e["params"][key]))
            transcripts += "transcript" in e
        elif kind == "received":
            received[peer][0] += 1
            received[peer][1] += int(e.get("bytes", 0))
        elif kind == "disclosure":
            result = dict(e.get("result") or {})
            book = ledger[peer]
            book.results.append((when, str(e.get("protocol")), str(e.get("session", "")), result))
            if "queries" in result:  # the peer queried us (PSI responder side)
                book.queries += 1
                book.queried_items += int(result.get("queries", 0))
                book.our_items_covered += int(result.get("our_items", 0))
                book.largest_filter = max(book.largest_filter, int(result.get("our_items", 0)))
    if verified.ok:
        verdict = (f"intact: {verified.entries} entries, {verified.checkpoints} signed checkpoints, "
                   f"head {verified.entries}:{verified.head}, {verified.uncovered} entries after the last checkpoint")
        if not verified.signed:  # the same flag as 'audit verify' (exit 3): only the chain protects these
            verdict += f" (UNSIGNED TAIL from {verified.first_unsigned}: not yet under a signature)"
    else:
        verdict = f"FAILED: first bad entry at {verified.first_bad}: {verified.problems[0]}"
    return AuditReport(
        node=node, generated=_when(now_ns), verification=verdict,
        per_day={d: dict(p) for d, p in sorted(per_day.items())}, flows=dict(sorted(flows.items())),
        received={p: (v[0], v[1]) for p, v in sorted(received.items())}, ledger=dict(sorted(ledger.items())),
        transcripts=transcripts,
    )


def _protection(protocol: str, step: str, flow: _Flow) -> str:
    # From the registry audit scan checks messages against: every checked step is described there.
    base = describe(protocol, step) or "unknown step"
    params = "; ".join(f"{k}={','.join(sorted(v))}" for k, v in flow.params.items())
    return f"{base}" + (f" ({params})" if params else "")


def _result_text(result: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(result.items()))


def render_markdown(r: AuditReport) -> str:
    out = [f"# Audit report: node {r.node}", "", f"Generated {r.generated}. Log verification: **{r.verification}**.", ""]
    out += ["## Bytes sent per peer per day", "", "| day | " + " | ".join(r.peers) + " | total |",
            "|---|" + "---:|" * (len(r.peers) + 1)]
    for day, by_peer in r.per_day.items():
        out.append(f"| {day} | " + " | ".join(str(by_peer.get(p, 0)) for p in r.peers) + f" | {sum(by_peer.values())} |")
    out += ["", "## What left, to whom, when, under which protection", "",
            "| peer | protocol | step | messages | bytes | first | last | protection |", "|---|---|---|---:|---:|---|---|---|"]
    for (peer, protocol, step), f in r.flows.items():
        out.append(f"| {peer} | {protocol} | {step} | {f.messages} | {f.bytes} | {_when(f.first)} | {_when(f.last)} | "
                   f"{_protection(protocol, step, f)} |")
    out += ["", f"Transcripts kept for {r.transcripts} of the sent messages.", "", "Received (logged, not sent):", ""]
    out += [f"- {peer}: {n} messages, {b} bytes" for peer, (n, b) in r.received.items()] or ["- nothing"]
    out += ["", "## Disclosure ledger", ""]
    for peer, book in r.ledger.items():
        out += [f"### {peer}", "",
                f"- queries against our data: {book.queries} (holding {book.queried_items} of the peer's items)",
                f"- our items those queries covered: {book.our_items_covered} in total, at most {book.largest_filter} in one query",
                f"- results disclosed to {peer}: {len(book.results)}", "",
                "| when | protocol | session | what the peer received or can learn |", "|---|---|---|---|"]
        out += [f"| {_when(w)} | {p} | {s[:12]} | {_result_text(res)} |" for w, p, s, res in book.results]
        out.append("")
    return "\n".join(out) + "\n"


_COLORS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")


def render_svg(r: AuditReport) -> str:
    """Stacked bars: bytes sent per day, one colour per peer."""
    days, peers = list(r.per_day), r.peers
    width, height, left, bottom, top = max(360, 80 + 70 * len(days)), 300, 70, 40, 20
    peak = max([sum(v.values()) for v in r.per_day.values()] or [0]) or 1
    scale = (height - bottom - top) / peak
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 160}" height="{height}" role="img" '
             f'aria-label="bytes sent per peer per day">',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" stroke="#333"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#333"/>',
             f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" font-size="11">{peak:,}</text>',
             f'<text x="{left - 6}" y="{height - bottom}" text-anchor="end" font-size="11">0</text>']
    for i, day in enumerate(days):
        x, y = left + 20 + 70 * i, height - bottom
        for j, peer in enumerate(peers):
            value = r.per_day[day].get(peer, 0)
            if not value:
                continue
            h = max(1.0, value * scale)
            y -= h
            parts.append(f'<rect x="{x}" y="{y:.1f}" width="40" height="{h:.1f}" fill="{_COLORS[j % len(_COLORS)]}">'
                         f'<title>{html.escape(peer)} {day}: {value:,} bytes</title></rect>')
        parts.append(f'<text x="{x + 20}" y="{height - bottom + 16}" text-anchor="middle" font-size="11">{day}</text>')
    for j, peer in enumerate(peers):
        parts.append(f'<rect x="{width + 20}" y="{top + 18 * j}" width="12" height="12" fill="{_COLORS[j % len(_COLORS)]}"/>'
                     f'<text x="{width + 38}" y="{top + 10 + 18 * j}" font-size="12">{html.escape(peer)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(r: AuditReport) -> str:
    e = html.escape

    def table(head: list[str], rows: list[list[Any]]) -> str:
        return ("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows) + "</table>")

    body = [f"<h1>Audit report: node {e(r.node)}</h1>",
            f"<p>Generated {e(r.generated)}. Log verification: <b>{e(r.verification)}</b>.</p>",
            "<h2>Bytes sent per peer per day</h2>", render_svg(r),
            table(["day", *r.peers, "total"],
                  [[d, *[v.get(p, 0) for p in r.peers], sum(v.values())] for d, v in r.per_day.items()]),
            "<h2>What left, to whom, when, under which protection</h2>",
            table(["peer", "protocol", "step", "messages", "bytes", "first", "last", "protection"],
                  [[p, pr, s, f.messages, f.bytes, _when(f.first), _when(f.last), _protection(pr, s, f)]
                   for (p, pr, s), f in r.flows.items()]),
            f"<p>Transcripts kept for {r.transcripts} of the sent messages.</p>",
            "<h3>Received (logged, not sent)</h3>",
            table(["peer", "messages", "bytes"], [[p, n, b] for p, (n, b) in r.received.items()]),
            "<h2>Disclosure ledger</h2>"]
    for peer, book in r.ledger.items():
        body += [f"<h3>{e(peer)}</h3><ul>",
                 f"<li>queries against our data: {book.queries} (holding {book.queried_items} of the peer's items)</li>",
                 f"<li>our items those queries covered: {book.our_items_covered} in total, at most {book.largest_filter} in one query</li>",
                 f"<li>results disclosed: {len(book.results)}</li></ul>",
                 table(["when", "protocol", "session", "what the peer received or can learn"],
                       [[_when(w), p, s[:12], _result_text(res)] for w, p, s, res in book.results])]
    style = ("body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}th{background:#f0f0f0}")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Audit report {e(r.node)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
