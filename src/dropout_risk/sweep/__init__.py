"""The learning-rate divergence sweep: an Optuna study around train(cfg), its workers and its report."""
