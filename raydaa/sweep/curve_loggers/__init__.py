"""A sweep's training curves on TensorBoard, MLflow and Weights & Biases
(`raydaa search --log-to`): every trial's per-step training metrics, its intermediate and
final evaluations, and its configuration as hyperparameters. The per-step reports stay in
Ray Train (never Tune results: raydaa/sweep/intermediate.py); logger.py says which
backend is live in which process."""
