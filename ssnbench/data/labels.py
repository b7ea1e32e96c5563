"""The eight Derm7pt labels and their grouped classes (Kawahara et al. 2018, "group infrequent").

The one owner of these constants; torch-free so that readers of result files (the report, metrics)
can import them without loading torch. The reader that maps meta.csv strings to these classes is
derm7pt.py.
"""

from __future__ import annotations

LABELS: tuple[str, ...] = ("DIAG", "PN", "BWV", "VS", "PIG", "STR", "DaG", "RS")
CLASSES: dict[str, tuple[str, ...]] = {
    "DIAG": ("BCC", "NEV", "MEL", "MISC", "SK"),
    "PN": ("ABS", "TYP", "ATP"),
    "BWV": ("ABS", "PRS"),
    "VS": ("ABS", "REG", "IR"),
    "PIG": ("ABS", "REG", "IR"),
    "STR": ("ABS", "REG", "IR"),
    "DaG": ("ABS", "REG", "IR"),
    "RS": ("ABS", "PRS"),
}
NUM_CLASSES: tuple[int, ...] = tuple(len(CLASSES[name]) for name in LABELS)
MEL_INDEX = 2  # melanoma's class index in DIAG
MODALITIES: tuple[str, ...] = ("clinic", "derm")  # the two images of a case (meta.csv columns)
