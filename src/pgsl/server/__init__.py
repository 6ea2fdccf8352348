"""Server side of the cut: APG recovery, up-sampling, three streams, fusion."""
