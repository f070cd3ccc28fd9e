"""Built-in generator adapters, registered lazily by "module:Class" (nothing imported here).

Third-party generators register through the ``cdm_bench.generators`` entry-point group.
"""

BUILTIN_GENERATORS = {
    "toy": "cdm_bench.toy.generator:ToyGenerator",
    "toy-real": "cdm_bench.toy.generator:ToyRealGenerator",
    "diffusers": "cdm_bench.generators.diffusers_generic:DiffusersGenerator",
    "sd3-medium": "cdm_bench.generators.named:SD3MediumGenerator",
    "sd3-medium-turbo": "cdm_bench.generators.named:SD3MediumTurboGenerator",
    "longcat-image": "cdm_bench.generators.named:LongCatImageGenerator",
    "longcat-image-turbo": "cdm_bench.generators.named:LongCatImageTurboGenerator",
    "sd3-hypersd": "cdm_bench.generators.baselines:SD3HyperSDGenerator",
    "sd3-tdm": "cdm_bench.generators.baselines:SD3TDMGenerator",
    "sd3-flash": "cdm_bench.generators.baselines:SD3FlashGenerator",
}
