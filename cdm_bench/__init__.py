"""cdm-bench: distil flow-matching teachers with CDM, and benchmark text-to-image generators."""

from cdm_bench import compat as _compat

__version__ = "0.1.0"
_compat.install()  # torchvision's CUDA wheel beside the CPU torch (see cdm_bench/compat.py)
