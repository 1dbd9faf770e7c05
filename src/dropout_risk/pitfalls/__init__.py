"""The pitfall presets: a classic mistake run beside its healthy counterpart, compared and explained."""
