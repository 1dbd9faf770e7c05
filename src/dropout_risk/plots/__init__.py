"""Figures: reliability diagrams, the divergence chart, the backprop flow, PNG output."""
