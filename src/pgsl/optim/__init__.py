"""Optimisation tools the attacks are built on: a batched L-BFGS-B solver (:mod:`.lbfgs`) and
per-sample gradients of a batch (:mod:`.per_sample`). Nothing here knows of attacks or defences."""
