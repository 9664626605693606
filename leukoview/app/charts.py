"""Plotly figure builders: pure functions from tables and arrays to figures (no Streamlit here)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

POS_COLOUR = "#c0392b"
NEG_COLOUR = "#2e86c1"
FONT = dict(size=14)


def _layout(fig: go.Figure, title: str, height: int = 380, **kw) -> go.Figure:
    fig.update_layout(title=dict(text=title, font=dict(size=16)), height=height, font=FONT,
                      margin=dict(l=60, r=20, t=50, b=50), template="plotly_white", **kw)
    return fig


def probability_bars(probabilities: dict[str, float], positive: list[str]) -> go.Figure:
    names = list(probabilities)
    vals = [probabilities[n] for n in names]
    colours = [POS_COLOUR if n in positive else NEG_COLOUR for n in names]
    fig = go.Figure(go.Bar(x=vals, y=names, orientation="h", marker_color=colours,
                           text=[f"{v:.1%}" for v in vals], textposition="auto"))
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    fig.update_yaxes(autorange="reversed")  # classes top to bottom in the card's order
    return _layout(fig, "Class probabilities (red = clinically positive)", height=60 + 45 * len(names))


def suspicion_gauge(score: float, threshold: float) -> go.Figure:
    fig = go.Figure(go.Indicator(
        mode="gauge+number", value=score * 100, number={"suffix": "%", "valueformat": ".1f"},
        gauge={"axis": {"range": [0, 100]}, "bar": {"color": POS_COLOUR if score >= threshold else NEG_COLOUR},
               "threshold": {"line": {"color": "black", "width": 4}, "value": threshold * 100}}))
    return _layout(fig, f"Suspicion score (black line = threshold {threshold:.1%})", height=260)


def confusion_heatmap(tp: int, fp: int, tn: int, fn: int, *, positive_name: str = "positive",
                      negative_name: str = "negative") -> go.Figure:
    z = np.array([[tp, fn], [fp, tn]])
    rows = np.array([[tp + fn] * 2, [fp + tn] * 2])
    rates = np.divide(z, rows, out=np.zeros_like(z, dtype=float), where=rows > 0)
    text = [[f"{z[i, j]}<br>({rates[i, j]:.1%})" for j in range(2)] for i in range(2)]
    fig = go.Figure(go.Heatmap(z=rates, x=[f"flagged {positive_name}", f"cleared {negative_name}"],
                               y=[f"truly {positive_name}", f"truly {negative_name}"], text=text,
                               texttemplate="%{text}", colorscale="Blues", zmin=0, zmax=1, showscale=False,
                               textfont=dict(size=16)))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, "Confusion matrix (count and row rate)", height=330)


def roc_figure(curves: list[tuple[str, np.ndarray, np.ndarray, float]], point: tuple[float, float] | None = None
               ) -> go.Figure:
    """``curves``: (name, fpr, tpr, auc); ``point``: (fpr, tpr) of the current operating point."""
    fig = go.Figure()
    for name, fpr, tpr, auc in curves:
        fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"{name} (AUC {auc:.4f})", line_shape="hv"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"),
                             name="chance", showlegend=False))
    if point is not None:
        fig.add_trace(go.Scatter(x=[point[0]], y=[point[1]], mode="markers", name="operating point",
                                 marker=dict(size=14, color="black", symbol="x")))
    fig.update_xaxes(title="1 - specificity (false-positive rate)", range=[-0.01, 1.01])
    fig.update_yaxes(title="sensitivity", range=[-0.01, 1.01])
    return _layout(fig, "ROC curve", legend=dict(x=0.35, y=0.05))


def pr_figure(curves: list[tuple[str, np.ndarray, np.ndarray, float]], point: tuple[float, float] | None = None
              ) -> go.Figure:
    """``curves``: (name, recall, precision, average precision); ``point``: (recall, precision)."""
    fig = go.Figure()
    for name, recall, precision, ap in curves:
        fig.add_trace(go.Scatter(x=recall, y=precision, mode="lines", name=f"{name} (AP {ap:.4f})",
                                 line_shape="vh"))
    if point is not None and not np.isnan(point[1]):
        fig.add_trace(go.Scatter(x=[point[0]], y=[point[1]], mode="markers", name="operating point",
                                 marker=dict(size=14, color="black", symbol="x")))
    fig.update_xaxes(title="recall (sensitivity)", range=[-0.01, 1.01])
    fig.update_yaxes(title="precision (PPV)", range=[-0.01, 1.01])
    return _layout(fig, "Precision-recall curve", legend=dict(x=0.02, y=0.05), showlegend=True)


def score_distributions(edges: np.ndarray, positive: np.ndarray, negative: np.ndarray, threshold: float, *,
                        log_y: bool = True) -> go.Figure:
    centres = (edges[:-1] + edges[1:]) / 2
    width = float(edges[1] - edges[0])
    fig = go.Figure()
    fig.add_trace(go.Bar(x=centres, y=negative, width=width, name="truly negative", marker_color=NEG_COLOUR,
                         opacity=0.7))
    fig.add_trace(go.Bar(x=centres, y=positive, width=width, name="truly positive", marker_color=POS_COLOUR,
                         opacity=0.7))
    fig.add_vline(x=threshold, line=dict(color="black", width=3, dash="dash"),
                  annotation_text=f"threshold {threshold:.3g}",
                  annotation_position="top left" if threshold > 0.6 else "top right")
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title="suspicion score", range=[0, 1])
    fig.update_yaxes(title="images" + (" (log scale)" if log_y else ""), type="log" if log_y else "linear",
                     dtick=1 if log_y else None)
    return _layout(fig, "Score distributions by true class", legend=dict(x=0.0, y=-0.28, orientation="h"),
                   height=410)


def reliability_diagram(bins: list[dict], ece: float, brier: float) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"),
                             name="perfect calibration"))
    if bins:
        fig.add_trace(go.Scatter(x=[b["confidence"] for b in bins], y=[b["accuracy"] for b in bins],
                                 mode="lines+markers", name="observed", line=dict(width=1, dash="dot"),
                                 marker=dict(size=[6 + 3 * np.log1p(b["count"]) for b in bins], color=POS_COLOUR),
                                 text=[f"{b['count']} images" for b in bins], hovertemplate="%{text}"))
    fig.update_xaxes(title="predicted probability of positive", range=[0, 1])
    fig.update_yaxes(title="observed share positive", range=[0, 1])
    return _layout(fig, f"Reliability diagram (ECE {ece:.4f}, Brier {brier:.4f})", legend=dict(x=0.02, y=0.98))


def per_class_recall_figure(df: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for model, g in df.groupby("model", sort=False):
        fig.add_trace(go.Bar(x=g["class"], y=g["recall"], name=model, text=[f"{v:.3f}" for v in g["recall"]],
                             textposition="auto"))
    fig.update_yaxes(title="recall", range=[0, 1.05])
    return _layout(fig, "Per-class recall on the test split", barmode="group")


def patient_figure(summary: pd.DataFrame, reference_percent: float, positive_name: str) -> go.Figure:
    """Per patient (:func:`leukoview.models.differential.per_patient`): % of classed cells pre-classified positive."""
    colours = [POS_COLOUR if a else NEG_COLOUR for a in summary["at_or_above_line"]]
    fig = go.Figure(go.Bar(x=summary["patient"].astype(str), y=summary["positive_percent"], marker_color=colours,
                           text=[f"{s}/{c}" for s, c in zip(summary["positive"], summary["classed"], strict=True)],
                           textposition="auto"))
    fig.add_hline(y=reference_percent, line=dict(color="black", dash="dash"),
                  annotation_text=f"{reference_percent:.0f}% line", annotation_position="top left")
    fig.update_yaxes(title=f"% {positive_name} of classed cells", range=[0, 105])
    fig.update_xaxes(title="patient", type="category")
    return _layout(fig, f"{positive_name} per patient (pre-classified by the model)")


def tta_figure(scores: np.ndarray, threshold: float) -> go.Figure:
    fig = go.Figure(go.Box(x=scores, boxpoints="all", name="8 views", marker_color=POS_COLOUR, jitter=0.3))
    fig.add_vline(x=threshold, line=dict(color="black", dash="dash"), annotation_text="threshold")
    fig.update_xaxes(range=[0, 1], title="suspicion score")
    return _layout(fig, "Test-time augmentation: score under flips and rotations", height=230)


def differential_figure(table: pd.DataFrame, reference_percent: float) -> go.Figure:
    """The differential count as bars (% of classed cells; positive types red), with the blast reference line."""
    typed = table[table["percent"].notna()]
    colours = [POS_COLOUR if p else NEG_COLOUR for p in typed["positive"]]
    fig = go.Figure(go.Bar(x=typed["type"], y=typed["percent"], marker_color=colours,
                           text=[f"{c} ({p:.1f}%)" for c, p in zip(typed["count"], typed["percent"], strict=True)],
                           textposition="auto"))
    fig.add_hline(y=reference_percent, line=dict(color="black", dash="dash"),
                  annotation_text=f"{reference_percent:.0f}% blast line", annotation_position="top left")
    fig.update_yaxes(title="% of classed cells", rangemode="tozero")
    fig.update_xaxes(type="category")
    return _layout(fig, "Differential count (pre-classified by the model)")


def cell_figure(image: np.ndarray, title: str = "") -> go.Figure:
    """An image at full resolution that the reviewer can zoom (scroll or box) and pan (drag), axes hidden."""
    import plotly.express as px

    fig = px.imshow(image, binary_string=True)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=title, height=300, margin=dict(l=0, r=0, t=30 if title else 0, b=0), dragmode="pan")
    return fig


def review_differential_figure(table: pd.DataFrame, reference_percent: float) -> go.Figure:
    """Per type, % as pre-classified and as reviewed, side by side, with the reference (blast) line."""
    part = table[table["pre %"].notna() | table["reviewed %"].notna()]
    fig = go.Figure([go.Bar(name="pre-classified", x=part["type"], y=part["pre %"], marker_color="#9aa5b1"),
                     go.Bar(name="reviewed", x=part["type"], y=part["reviewed %"], marker_color="#1f77b4")])
    fig.add_hline(y=reference_percent, line_dash="dash", line_color="#d62728",
                  annotation_text=f"{reference_percent:.0f}% line")
    fig.update_layout(barmode="group", yaxis_title="% of classed cells")
    return _layout(fig, "Differential: pre-classified vs reviewed", height=320)


def bland_altman_figure(agreement: dict, title: str) -> go.Figure:
    """Bland-Altman plot of a per-patient count against the signed one
    (:func:`leukoview.models.differential.agreement`): the difference against the mean of the two, the bias and the 95%
    limits of agreement."""
    rows = agreement["rows"]
    fig = go.Figure(go.Scatter(x=[r["mean"] for r in rows], y=[r["difference"] for r in rows], mode="markers",
                               marker=dict(color=POS_COLOUR, size=8), text=[r["patient"] for r in rows],
                               hovertemplate="%{text}: mean %{x:.1f}%, model - signed %{y:.1f} points"))
    bias, (lo, hi) = agreement["bias_points"], agreement["limits_of_agreement"]
    fig.add_hline(y=bias, line=dict(color="black"), annotation_text=f"bias {bias:+.1f}")
    for v in (lo, hi):
        fig.add_hline(y=v, line=dict(color="grey", dash="dash"), annotation_text=f"{v:+.1f}")
    fig.update_xaxes(title="mean of model and signed blast % (per patient)")
    fig.update_yaxes(title="model − signed (points)")
    return _layout(fig, title)
