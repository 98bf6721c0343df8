"""Generators behind one protocol: vLLM, transformers, OpenAI-compatible HTTP, dataset evidence."""

from steper_ray.reasoning.generators.protocol import Generation, Generator, GenRequest

__all__ = ["GenRequest", "Generation", "Generator"]
