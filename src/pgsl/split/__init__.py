"""What crosses the cut: typed messages and the channel that carries them."""
