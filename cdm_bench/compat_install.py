"""``python -m cdm_bench.compat_install``: put the torchvision compat hook into every process of
this environment (writes :data:`cdm_bench.compat.PTH_NAME` into site-packages; see
:mod:`cdm_bench.compat`). ``make`` runs it for the environments it builds."""

from cdm_bench.compat import install_pth

if __name__ == "__main__":
    print(f"wrote {install_pth()}")
