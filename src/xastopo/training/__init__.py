"""Training loops, evaluation metrics, plots and MLflow tracking."""
