"""Prompts, the step-wise reasoning loop, answer parsing and generators."""
