"""steper-ray: StepER step-wise distillation of retrieval-augmented reasoning, on Ray."""

__version__ = "0.1.0"
