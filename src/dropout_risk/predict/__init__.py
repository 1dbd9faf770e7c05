"""Scoring new students with a logged model: request (checks), model (finding and loading the
run's pyfunc model), score (a CSV through the training loader and the model's schema, the
summary), run (run_predict: what pipelines/predict.py calls)."""
