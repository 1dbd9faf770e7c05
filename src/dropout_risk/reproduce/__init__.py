"""Re-running a logged run or a config file through train(cfg) and verifying the result."""
