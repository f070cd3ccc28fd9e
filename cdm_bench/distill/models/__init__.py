"""Distillation adapters for real diffusers models (registered in :data:`cdm_bench.distill.adapter.ADAPTERS`)."""
