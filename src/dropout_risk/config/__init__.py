"""Configuration: the schema, the checks after composition, the `_target_` allow-list, saved configs, error lines."""
