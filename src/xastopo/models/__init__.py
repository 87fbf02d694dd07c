"""Models: the paper's network, its type-only ablation, and the scikit-learn baselines."""
