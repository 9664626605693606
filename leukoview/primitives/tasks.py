"""The task registry: every registered dataset's name, display title, classes, what is clinically positive, its
licence, and which other registered datasets share images with it. Plain data with no heavy imports, so Home and
the sidebar read it without loading pandas; :mod:`leukoview.models.datasets` pairs each entry with its folder loader (a
test checks the two agree).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str
    title: str  # what the pages call the task
    positive_name: str  # what the pages call the positive class(es)
    classes: tuple[str, ...]
    positive: tuple[str, ...]
    description: str
    licence: str
    shares_images_with: tuple[str, ...] = ()  # registered datasets holding some of the same images
    superseded_by: str = ""  # a task whose model replaces this one's for reviewers (this one kept for comparison)
    per_patient: bool = False  # its models score single cells of patients: a per-patient share of positives means
    # something (C-NMC style file names carry the patient id)
    recommended: str = ""  # the bundle id reviewers get for this task ("": <task>-efficientnet_lite0)
    combines: tuple[str, ...] = ()  # registered datasets this one is made of (its images are all theirs)
    recommended_why: str = ""  # one line: why the recommended bundle was chosen (pages show it beside the mark)

    def others(self) -> list[str]:
        """Registered tasks whose images this task's model never saw (the OOD evaluation's "other cells")."""
        return [n for n, t in TASKS.items() if n != self.name and n not in self.shares_images_with
                and not t.combines]  # a combined set's images are already its parts


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("all4", "ALL vs benign and ALL subtype (Taleqani)", "B-ALL",
         ("Benign", "Early Pre-B", "Pre-B", "Pro-B"), ("Early Pre-B", "Pre-B", "Pro-B"),
         "B-ALL vs benign and ALL subtype, peripheral-blood smear crops",
         "Taleqani Hospital ALL set (Aria et al. 2021; Ghaderzadeh et al. 2022); see Kaggle mehradaria/leukemia "
         "for terms", recommended="all4-efficientnet_lite0-cells-fieldhead",
         recommended_why="it reads every lymphoid cell of a field (its Grad-CAM looks at cells, not background) and "
                         "its refitted field head met the own-split targets; docs/results.md, 'The ALL model reads "
                         "the cells'"),
    Task("wbc5", "Myeloblast among leukocytes (5 types, 2 scanners)", "myeloblast (AML blast)",
         ("basophil", "erythroblast", "monocyte", "myeloblast", "seg_neutrophil"), ("myeloblast",),
         "Five leukocyte types; myeloblast (AML blast) is positive",
         "PBC dataset (Acevedo et al. 2020, CC BY 4.0) and AML-Cytomorphology_LMU (Matek et al. 2019, CC BY 3.0)",
         shares_images_with=("wbc9", "diff3"), superseded_by="wbc9"),
    Task("wbc9", "Leukocyte differential with myeloblast (9 types, 2 scanners)", "myeloblast (AML blast)",
         ("basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "myeloblast", "neutrophil",
          "platelet"), ("myeloblast",),
         "Nine peripheral-blood cell types from two scanners (wbc5 + pbc_extra; PBC and LMU neutrophils merged); "
         "myeloblast (AML blast) is positive",
         "PBC dataset (Acevedo et al. 2020, CC BY 4.0) and AML-Cytomorphology_LMU (Matek et al. 2019, CC BY 3.0)",
         shares_images_with=("wbc5", "diff3"), recommended="wbc9-efficientnet_lite0-reinhard",
         superseded_by="diff3",
         recommended_why="Reinhard colour normalisation cut another lab's normal cells called myeloblast the most "
                         "(reports/probe-wbc9-inputs.md) with the own-split targets met"),
    Task("deepapl", "DeepAPL: AML/APL signed cells (Johns Hopkins)", "blast (myeloid)",
         ("basophil", "blast", "eosinophil", "erythroblast", "lymphocyte", "monocyte", "neutrophil"), ("blast",),
         "Technologist-signed cells of 73 AML/APL patients (Johns Hopkins Hospital), a folder per patient; band and "
         "segmented neutrophils mapped to neutrophil; blasts are myeloid (no lineage specified)",
         "DeepAPL (Sidhom et al. 2021, npj Precision Oncology); (c) Johns Hopkins University, no licence grant: "
         "research and education use, cite the paper", shares_images_with=("diff3",), per_patient=True),
    Task("diff3", "Leukocyte differential with blast (9 types, 3 laboratories)", "blast (myeloid)",
         ("basophil", "blast", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil",
          "platelet"), ("blast",),
         "Nine peripheral-blood cell types from three laboratories: PBC (Barcelona), LMU (Munich) and JHH (Johns "
         "Hopkins, DeepAPL); LMU myeloblasts and JHH blasts form the positive class 'blast' (myeloid blasts of AML / "
         "APL); JHH band and segmented neutrophils -> neutrophil",
         "PBC dataset (Acevedo et al. 2020, CC BY 4.0), AML-Cytomorphology_LMU (Matek et al. 2019, CC BY 3.0) and "
         "DeepAPL (Sidhom et al. 2021; (c) Johns Hopkins University, research and education use, cite the paper)",
         shares_images_with=("wbc5", "wbc9", "deepapl"), per_patient=True, combines=("wbc9", "deepapl"),
         recommended="diff3-efficientnet_lite0-balanced",
         recommended_why="trained on blasts of two laboratories (LMU, JHH) with source-balanced sampling, it finds "
                         "another laboratory's blasts that the wbc9 model, which learned the one scanner that imaged "
                         "every blast, missed, and raises fewer unflagged alarms on BCCD (reports/ablation-diff3.md)"),
    Task("cnmc", "C-NMC single-cell ALL vs HEM", "ALL blast", ("hem", "all"), ("all",),
         "Single segmented cells: ALL blast vs normal B-lymphoid (hem), with patient ids",
         "C-NMC 2019 (SBI Lab IIIT Delhi / AIIMS; TCIA, CC BY 3.0; Gupta A., Gupta R. et al.)", per_patient=True),
)}


def task_title(name: str) -> str:
    """Display title of a task; an unregistered one (``folder:…``) is shown by its name."""
    return TASKS[name].title if name in TASKS else name


def recommended_for(name: str) -> str:
    """The bundle id reviewers get for a task, following its supersession (wbc5 -> wbc9 -> diff3): the
    leukocyte model is ``recommended_for("wbc9")`` whichever task ships it now; '' when none is registered."""
    seen = set()
    while name in TASKS and TASKS[name].superseded_by and name not in seen:
        seen.add(name)
        name = TASKS[name].superseded_by
    return TASKS[name].recommended if name in TASKS else ""


def per_patient(name: str) -> bool:
    """Whether a per-patient share of positive cells fits this task's models."""
    return name in TASKS and TASKS[name].per_patient


def positive_name(name: str, positive: list[str]) -> str:
    """What to call the positive class(es) of a task; unregistered tasks list their positive classes."""
    return TASKS[name].positive_name if name in TASKS else " / ".join(positive)
