"""The words a decision and a differential use, defined once (no heavy imports: pages, reports and the gallery
read them without loading torch)."""

CANNOT_ASSESS = "cannot assess"  # the decision of an out-of-distribution image: no verdict, either way
FLAGGED_UNIDENTIFIED = "unidentified (out of distribution)"  # the model's row for cells it flags as unlike its
#                                                               training data (left out of the percentages)
REVIEWED_UNIDENTIFIED = "unidentified"  # the class a reviewer gives a cell nobody can place (an override to it)
