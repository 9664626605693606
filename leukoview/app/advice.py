"""Plain-language reading of one prediction: risk band, decision, next steps and limitations."""
from __future__ import annotations

from dataclasses import dataclass

from leukoview.primitives.vocab import CANNOT_ASSESS


@dataclass(frozen=True)
class Reading:
    band: str  # "low", "borderline", "high", or "cannot assess" (out of distribution: no verdict)
    headline: str
    next_steps: list[str]
    limitations: list[str]


def risk_band(score: float, threshold: float) -> str:
    """low: below the operating threshold; high: at least 0.9 (and above threshold); borderline: in between."""
    if score < threshold:
        return "low"
    return "high" if score >= max(0.9, threshold) else "borderline"


def read_prediction(score: float, threshold: float, predicted: str, positive: list[str], *, ood: bool,
                    task_positive_name: str = "the positive class") -> Reading:
    """The page's reading of one prediction. An out-of-distribution image gets no verdict at all — neither
    reassurance nor alarm — because the score says nothing about an image unlike the training data."""
    limitations = ["Research and education tool, not a medical device: it must not be used for diagnosis.",
                   "Trained on public datasets from few sites and scanners; performance on other labs' slides "
                   "is unknown."]
    if ood:
        return Reading(CANNOT_ASSESS,
                       f"Cannot assess: this image is unlike the images the model was trained on "
                       f"(out-of-distribution flag), so its {task_positive_name} score means nothing here.",
                       ["Do not read the score below as low or high risk: review the image yourself.",
                        "Check that it shows stained blood cells of the kind this model reads (stain, "
                        "magnification, one cell or a field), or choose the model whose task fits."],
                       ["This image is unlike the training data (out-of-distribution flag): the score "
                        "may be meaningless.", *limitations])
    band = risk_band(score, threshold)
    flagged = score >= threshold
    if band == "low":
        headline = (f"Below the operating threshold ({score:.1%} < {threshold:.1%}): not flagged as "
                    f"{task_positive_name}.")
        steps = ["Routine review; the model does not prioritise this image.",
                 "A low score does not rule disease out: morphology review still applies."]
    elif band == "borderline":
        headline = (f"Flagged ({score:.1%} ≥ threshold {threshold:.1%}) but not a confident call: "
                    f"borderline for {task_positive_name}.")
        steps = ["Prioritise for expert morphology review.", "Check the Grad-CAM: is the highlight on the cell?",
                 "Consider more fields of view from the same smear."]
    else:
        headline = f"High suspicion ({score:.1%}, threshold {threshold:.1%}) of {task_positive_name}."
        steps = ["Prioritise for expert review and confirm with the standard work-up (e.g. flow cytometry).",
                 "Check the Grad-CAM: is the highlight on the cell?"]
    if predicted in positive and not flagged:
        steps.append(f"The most likely single class is {predicted} although the summed score is below threshold.")
    return Reading(band, headline, steps, limitations)


def cell_table(cells, outputs: dict, classes: list[str]):
    """The per-cell table of a cell-level model's image (row k = box k): predicted class, suspicion and box, from
    :meth:`leukoview.jobs.predict.Predictor.score_cells`. No per-cell OOD flag: the detector is fitted on whole images'
    (cell-averaged) features, and the image's own flag is shown above the table."""
    import pandas as pd

    probs = outputs["probs"]
    return pd.DataFrame({"cell": range(1, len(cells) + 1),
                         "predicted": [classes[int(i)] for i in probs.argmax(1)],
                         "suspicion": outputs["suspicion"].round(4),
                         "box": [str(c.box) for c in cells]})
