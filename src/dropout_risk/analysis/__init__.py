"""Numbers computed from predictions and networks: metrics, calibration, sharpness, the divergence boundary, the backprop mechanism."""
