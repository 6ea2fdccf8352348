"""The adversary's tools (paper §III, §V-C; DESIGN §1, §3), kept apart from our defences.

Every attack gets an :class:`~pgsl.attacks.view.AttackerView`: what crossed the cut for the victims,
the attacker's own auxiliary images with the client pipeline's answers for them, and (for the
white-box attacks) a differentiable model of the client. It never holds the victims' raw images;
those stay with the evaluator (``pgsl.experiments.privacy``), which only scores reconstructions.
"""
