"""ssnbench: reference harness for parameter-efficient multi-modal skin-lesion classification."""

__version__ = "0.1.0"
