"""The comparison defences of paper §V-C / DESIGN §3, applied on the client at the cut.

PGSL itself lives in ``pgsl.client`` and ``pgsl.server``; these are the baselines it is measured
against: Laplacian noise on the activations (Titcombe et al. 2021) and NoPeek's distance
correlation loss (Vepakomma et al. 2019).
"""
