"""Answer and retrieval metrics, evaluation jobs and reports."""
