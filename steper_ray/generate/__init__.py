"""Teacher trace generation: filtering, step-wise examples and the Ray Data job."""
