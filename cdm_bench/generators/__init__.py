"""Built-in generator adapters, registered lazily by "module:Class" (nothing imported here).

Third-party generators register through the ``cdm_bench.generators`` entry-point group.
"""

BUILTIN_GENERATORS = {
    "toy": "cdm_bench.toy.generator:ToyGenerator",
    "toy-real": "cdm_bench.toy.generator:ToyRealGenerator",
    "diffusers": "cdm_bench.generators.diffusers_generic:DiffusersGenerator",
}
