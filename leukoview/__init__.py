"""leukoview: clinical-review dashboard library for leukemia blood-cell microscopy (research and education
use only; not a medical device)."""

__version__ = "0.1.0"
