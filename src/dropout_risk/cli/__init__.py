"""What the pipelines share on the command line: preflight, one-line errors, printed summaries (the library never imports it)."""
