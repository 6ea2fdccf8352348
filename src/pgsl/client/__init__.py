"""Client side of the cut: intentional pixel attack, reversible down-sampling, conv1-conv2."""
