"""Metric implementations, one module per family, registered lazily by "module:Class".

Nothing heavy is imported here: ``cdm-bench ls metrics`` works without any scorer library.
Third-party metrics register through the ``cdm_bench.metrics`` entry-point group.
"""

BUILTIN_METRICS = {
    "toy_fid": "metrics.toy:ToyFID",
    "toy_align": "metrics.toy:ToyAlign",
    "toy_diag": "metrics.toy_diag:ToyDiag",
    "clipscore": "metrics.clip_family:ClipScore",
    "pickscore": "metrics.clip_family:PickScore",
    "aesthetic": "metrics.clip_family:Aesthetic",
    "hpsv2": "metrics.hpsv2:HPSv2",
    "imagereward": "metrics.imagereward:ImageReward",
    "hpsv3": "metrics.hpsv3:HPSv3",
    "dpgbench": "metrics.dpgbench:DPGBench",
    "ocr": "metrics.ocr:OCRScore",
    "fid": "metrics.fid:FID",
    "kid": "metrics.fid:KID",
    "diversity": "metrics.diversity:Diversity",
    "vqascore": "metrics.vqascore:VQAScore",
}
