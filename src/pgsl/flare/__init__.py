"""PGSL as an NVIDIA FLARE job (``pip install pgsl[flare]``, NVFlare 2.9's Collab API).

The same split learning as ``pgsl server`` / ``pgsl client``, carried by the federated engine a
hospital may already run, with its provisioning, certificates and job lifecycle:

- :mod:`pgsl.flare.server_app` -- :class:`~pgsl.flare.server_app.FlareServer`, FLARE's server
  object: one :class:`~pgsl.transport.hub.StepHub` (the shared server party, arrival-order
  scheduling, validation, refusals, reply cache, checkpoints: the gRPC server's own), published as
  ``join`` and ``step``; its ``main`` asks every site to train and collects what they report.
- :mod:`pgsl.flare.site_app` -- :class:`~pgsl.flare.site_app.FlareSite`, each hospital's object: its
  local data and :class:`~pgsl.client.party.ClientParty`, trained by the same driver as
  ``pgsl client`` through :class:`~pgsl.flare.channel.FlareChannel`. It never imports server code.
- :mod:`pgsl.flare.job` -- the recipe, its export as a job folder (with a ``project.yml`` for
  ``nvflare provision``) and the simulator / proof-of-concept runs behind ``pgsl flare``.

On the wire, a step is the gRPC runtime's protobuf message, serialised: the server decodes and
validates it with the same codec, so a malformed message is refused the same way.
"""
