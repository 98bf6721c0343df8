"""The HTTP endpoint: a retriever deployment, a reasoner deployment running the student's
step-wise loop, and a FastAPI ingress. ``build_app(config)`` assembles them; see ``app``."""
