"""The mechanism lab page: one student's forward and backward pass as a self-contained HTML page."""
