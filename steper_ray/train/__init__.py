"""Student training: step-wise data, the sigma-weighted loss, DeepSpeed config, the train loop."""
