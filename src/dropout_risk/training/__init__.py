"""train(cfg): one run from config to tracked result, with its callbacks, evaluation and artifacts."""
