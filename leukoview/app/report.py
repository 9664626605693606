"""The sign-off report of a reviewed folder: one self-contained HTML file (thumbnails inline) with the sign-off,
the differential as pre-classified and as reviewed, the positive and the flagged cells as thumbnails, and the
model card's summary. Without a sign-off it is marked as a draft. Pure Python: the page offers it for download
and the tests read it."""
from __future__ import annotations

import html
import math
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from leukoview import audits
from leukoview.app.batch import thumbnail_uri
from leukoview.app.gallery import current_decisions, reviewed_class
from leukoview.models.card import Card
from leukoview.primitives.vocab import FLAGGED_UNIDENTIFIED

MAX_THUMBNAILS = 60  # per section; the report says when more were left out


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.1f}"
    return html.escape(str(v))


def _table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cells(rows: pd.DataFrame, folder: Path, decisions: dict, title: str) -> str:
    if rows.empty:
        return f"<h2>{html.escape(title)}</h2><p>None.</p>"
    shown = rows.head(MAX_THUMBNAILS)
    items = []
    for r in shown.to_dict("records"):
        uri = thumbnail_uri(Path(folder) / r["file"], size=120)
        got = reviewed_class(r, decisions.get(r["file"]))
        img = f'<img src="{uri}" alt="{html.escape(r["file"])}">' if uri else "<div class='missing'>unreadable</div>"
        items.append(f"<figure>{img}<figcaption>{html.escape(r['file'])}<br>{html.escape(str(r['predicted']))} "
                     f"{r['suspicion']:.0%} · reviewed: {html.escape(got)}</figcaption></figure>")
    more = f"<p>{len(rows) - len(shown)} more not shown.</p>" if len(rows) > len(shown) else ""
    return f"<h2>{html.escape(title)} ({len(rows)})</h2><div class='grid'>{''.join(items)}</div>{more}"


def card_summary(card: Card, metrics: dict) -> list[tuple[str, str]]:
    """The lines of the model card a report carries: id, task, architecture, start, input, threshold, the test
    split's headline figures and the external sets it was measured on."""
    lines = [("model", card.id), ("task", card.task),
             ("architecture", card.architecture_description or card.architecture),
             ("initialised from", card.pretrained_source),
             ("input", f"{card.input.get('size', '')} px"
              + (f"; {card.input['locate'].get('what', '')}" if card.input.get("locate") else "")
              + (f"; {card.input['colour'].get('what', '')}" if card.input.get("colour") else "")),
             ("threshold", f"{card.threshold:.4f} ({card.threshold_rule})"),
             ("weights sha256", card.weights_sha256),
             ("intended use", card.intended_use)]
    at = metrics.get("at_threshold") or {}
    for key, name, value in (("accuracy", "test accuracy", metrics.get("accuracy")),
                             ("roc_auc", "test ROC-AUC", metrics.get("roc_auc")),
                             ("sensitivity", "test sensitivity at the threshold", at.get("sensitivity")),
                             ("specificity", "test specificity at the threshold", at.get("specificity"))):
        if isinstance(value, (int, float)):
            ci = metrics.get(f"{key}_ci95")
            lines.append((name, f"{value:.3f}" + (f" [{ci[0]:.3f}-{ci[1]:.3f}]" if ci else "")))
    for name, ext in (metrics.get(audits.EXTERNAL.key) or {}).items():
        false_alarms = ext.get("positive_decision_among_normal") or {}
        if isinstance(false_alarms.get("rate"), (int, float)):
            lines.append((f"external set {name}", f"normal cells called positive {false_alarms['rate']:.1%} "
                                                  f"({false_alarms['count']} of {false_alarms['of']})"))
    return [(k, str(v)) for k, v in lines]


def render(*, folder: str, queue: pd.DataFrame, decisions: pd.DataFrame | None, table: pd.DataFrame,
           summary: dict, card: Card, metrics: dict, sign_off: dict | None, positive: list[str],
           positive_name: str, trail_head: str = "") -> str:
    """The report as an HTML string. ``queue``/``table``/``summary``: :func:`leukoview.app.gallery.review_queue` and
    :func:`leukoview.app.gallery.review_differential`; ``sign_off``: a row of :meth:`ReviewStore.sign_offs` or None."""
    current = current_decisions(decisions)
    status = (f"Signed off by <b>{html.escape(sign_off['reviewer'])}</b> at {html.escape(sign_off['created_at'])}"
              if sign_off else "<b class='draft'>DRAFT: not signed off</b>")
    reviewed_pos = queue[[reviewed_class(r, current.get(r["file"])) in positive for r in queue.to_dict("records")]]
    flagged = queue[queue["group"] == FLAGGED_UNIDENTIFIED]
    pre_pos = queue[queue["group"].isin(positive)]
    pct = summary["positive_percent_reviewed"]
    base = summary["classed_reviewed"]
    line = (f"{positive_name} {pct:.1f}% of {base} reviewed classed cell{'s' if base != 1 else ''} (of "
            f"{summary['cells']} cells in the folder; {summary['cells'] - summary['reviewed']} not reviewed) — "
            f"{'at or above' if pct >= summary['reference_percent'] else 'below'} the "
            f"{summary['reference_percent']:.0f}% line" if not math.isnan(pct) else
            f"{positive_name}: no reviewed classed cells yet")
    seen = int(queue["in_training"].isin(["train", "val"]).sum()) if "in_training" in queue else 0
    facts = [("folder", folder), ("cells", str(summary["cells"])),
             ("reviewed", f"{summary['reviewed']} of {summary['cells']}"),
             ("second review pending", str(summary["pending"])),
             ("cells in the model's training data", f"{seen} of {summary['cells']} (the model's calls on them are not "
                                                    "evidence of how it reads new cells)" if seen else "none found"),
             ("report written", datetime.now(UTC).isoformat(timespec="seconds"))]
    if sign_off and sign_off.get("comment"):
        facts.append(("sign-off comment", sign_off["comment"]))
    if sign_off and sign_off.get("mode"):
        facts.append(("signer identified", sign_off["mode"] + (" — no sign-in was configured: the name was typed, "
                                                               "not verified" if sign_off["mode"] == "demo" else "")))
    if trail_head:
        facts.append(("audit trail head", f"{trail_head} (python -m leukoview audit-trail verify recomputes it)"))
    dl = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    model = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                    for k, v in card_summary(card, metrics))
    style = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:.5em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}.grid{display:flex;flex-wrap:wrap;gap:8px}"
             "figure{margin:0;width:130px;font-size:11px}img{width:120px;height:120px;object-fit:cover}"
             ".draft{color:#b00}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>leukoview report: {html.escape(folder)}</title>"
            f"<style>{style}</style></head><body><h1>leukoview cell review report</h1><p>{status}</p>"
            f"<table>{dl}</table><h2>Differential</h2><p>{html.escape(line)}. Unidentified cells, cells sent to "
            "second review and cells not yet reviewed are counted but left out of the percentages.</p>"
            f"{_table(table.drop(columns=['positive']))}"
            f"{_cells(reviewed_pos, Path(folder), current, f'Reviewed as {positive_name}')}"
            f"{_cells(pre_pos, Path(folder), current, f'Pre-classified as {positive_name}')}"
            f"{_cells(flagged, Path(folder), current, 'Flagged out of distribution (unidentified)')}"
            f"<h2>Model</h2><table>{model}</table><p>Decision support only: every cell needs a reviewer's "
            "confirmation; the model's figures come from its own test split and the external sets listed.</p>"
            "<p><b>leukoview is a research and education tool, not a medical device.</b> It has not been clinically "
            "validated and must not be used on its own for diagnosis or treatment decisions.</p>"
            "</body></html>")


def report_name(folder: str, when: datetime | None = None) -> str:
    """``leukoview_report_<folder name>_<YYYY-MM-DD>.html``."""
    from leukoview.app.review import export_name

    return export_name(folder, when).replace("leukoview_", "leukoview_report_", 1).replace(".csv", ".html")
