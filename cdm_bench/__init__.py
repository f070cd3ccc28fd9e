"""cdm-bench: distil flow-matching teachers with CDM, and benchmark text-to-image generators."""

__version__ = "0.1.0"
