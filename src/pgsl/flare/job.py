"""The PGSL job for NVIDIA FLARE: built, exported for ``nvflare provision``/``submit``, or run.

- :func:`make_recipe` -- a Collab recipe: :class:`~pgsl.flare.server_app.FlareServer` on the server,
  :class:`~pgsl.flare.site_app.FlareSite` on every site, the run's configuration inside, and per
  site its seed (the run's seed + the site's index, as ``pgsl client --seed``) and, optionally, its
  data folder.
- :func:`export_job` -- the job folder (``nvflare job submit``) and a ``project.yml`` template for
  ``nvflare provision`` (mutual TLS; the site names are the names in the sites' certificates).
- :func:`simulate` -- FLARE's simulator (``SimEnv``): one machine, the parties in FLARE's own
  processes, no provisioning.
- :func:`poc` -- FLARE's proof of concept (``PocEnv``): a provisioned project (certificates, mutual
  TLS) with the server, each site and an admin as separate processes on loopback.

Every function returns the server's summary (``flare-summary.json``: each site's report, or why it
failed). Every site's machine must have ``pgsl[flare]`` installed: the job names pgsl's classes.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from pgsl.config import Config
from pgsl.errors import UserError

__all__ = ["classes_of", "export_job", "make_recipe", "poc", "project_yml", "run_local", "simulate"]

DEFAULT_NAME = "pgsl"
ADMIN = "admin@pgsl.local"  # the project admin of the templates (POC submits the job as it)


def make_recipe(cfg: Config, *, sites: list[str], classes: int, server_out: str, site_out: str,
                site_data: dict[str, str] | None = None, wire_dtype: str = "float32",
                device: str = "cpu", checkpoint_every: int = 200, name: str = DEFAULT_NAME,
                site_class: type | None = None) -> Any:
    """A ``CollabRecipe`` training ``cfg`` on ``sites`` against one shared server.

    ``server_out`` / ``site_out``: folders on the server's / each site's machine (a relative path
    is relative to the FLARE process's working directory); ``site_data``: a site's data folder
    where it differs from ``cfg.data.data_dir``; ``site_class``: a subclass of
    :class:`~pgsl.flare.site_app.FlareSite` to run on the sites instead (its module must be
    importable there: FLARE ships its file with the job).
    """
    from nvflare.collab import CollabRecipe

    from pgsl.flare.server_app import FlareServer
    from pgsl.flare.site_app import FlareSite
    from pgsl.transport.wire import wire_dtype as check_wire_dtype

    if not sites or len(set(sites)) != len(sites) or not all(s and s.strip() == s for s in sites):
        raise ValueError(f"sites must be distinct non-empty names, got {sites!r}")
    unknown = set(site_data or {}) - set(sites)
    if unknown:
        raise ValueError(f"data folders given for sites not in the job: {sorted(unknown)}")
    check_wire_dtype(wire_dtype)
    config = json.dumps(cfg.to_dict())
    recipe = CollabRecipe(
        job_name=name,
        server=FlareServer(config, classes, server_out, ",".join(sites), checkpoint_every, device),
        client=(site_class or FlareSite)(config, site_out, wire_dtype, device),
        min_clients=len(sites),
        sync_task_timeout=600,
    )
    # pgsl is installed on every party (pgsl[flare]); without this FLARE copies the pgsl modules
    # the job's classes import into each app's custom folder, server code into the sites' apps
    recipe._job.set_app_packages(["pgsl"])
    per_site: dict[str, dict[str, Any]] = {}
    for i, site in enumerate(sites):
        per_site[site] = {"seed": cfg.train.seed + i}
        if site_data and site in site_data:
            per_site[site]["data_dir"] = site_data[site]
    recipe.set_per_site_config(per_site)
    return recipe


def project_yml(sites: list[str], *, server: str, name: str = DEFAULT_NAME, org: str = "pgsl",
                admin: str = ADMIN, fed_learn_port: int = 8002,
                admin_port: int = 8003) -> str:
    """A ``project.yml`` for ``nvflare provision``: the server (its name is the host the sites
    connect to, and the name in its certificate), one client per site (the name in its
    certificate, which the server checks calls against), one project admin; mutual TLS."""
    lines = [
        "api_version: 3",
        f"name: {name}",
        "description: PGSL split learning (pgsl flare); provision with `nvflare provision -p project.yml`",
        "",
        "participants:",
        "  # the server's fully qualified domain name: the sites connect to it and check its certificate",
        f"  - name: {server}",
        "    type: server",
        f"    org: {org}",
        f"    fed_learn_port: {fed_learn_port}",
        f"    admin_port: {admin_port}",
    ]
    for site in sites:
        lines += [f"  - name: {site}", "    type: client", f"    org: {org}"]
    lines += [
        f"  - name: {admin}",
        "    type: admin",
        f"    org: {org}",
        "    role: project_admin",
        "",
        "builders:",
        "  - path: nvflare.lighter.impl.workspace.WorkspaceBuilder",
        "    args:",
        "      template_file: master_template.yml",
        "  - path: nvflare.lighter.impl.static_file.StaticFileBuilder",
        "    args:",
        "      config_folder: config",
        "      # the default connection security is mutual TLS between every party",
        "  - path: nvflare.lighter.impl.cert.CertBuilder",
        "  - path: nvflare.lighter.impl.signature.SignatureBuilder",
        "",
    ]
    return "\n".join(lines)


def export_job(recipe: Any, job_dir: Path, sites: list[str], *, server: str) -> Path:
    """Write the job to ``job_dir/<job name>`` and ``job_dir/project.yml``; -> the job folder."""
    job_dir.mkdir(parents=True, exist_ok=True)
    recipe.export(str(job_dir))
    (job_dir / "project.yml").write_text(project_yml(sites, server=server))
    return job_dir / recipe.job_name


def _summary(server_out: Path) -> dict[str, Any]:
    from pgsl.flare.server_app import SUMMARY

    path = server_out / SUMMARY
    if not path.is_file():
        raise RuntimeError(f"the FLARE job ended without a summary ({path} is missing): see the "
                           "FLARE logs in its workspace")
    return dict(json.loads(path.read_text()))


def _clear_summary(server_out: Path) -> None:
    from pgsl.flare.server_app import SUMMARY

    (server_out / SUMMARY).unlink(missing_ok=True)


def simulate(recipe: Any, sites: list[str], *, server_out: Path, workspace: Path) -> dict[str, Any]:
    """Run the job in FLARE's simulator; -> the server's summary."""
    from nvflare.recipe import SimEnv

    _clear_summary(server_out)
    env = SimEnv(clients=sites, workspace_root=str(workspace), log_config="ERROR")
    recipe.run(env)
    return _summary(server_out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poc(recipe: Any, sites: list[str], *, server_out: Path, workspace: Path,
        timeout: float = 86400.0) -> dict[str, Any]:
    """Run the job in FLARE's proof-of-concept mode on loopback; -> the server's summary.

    The project names its server ``localhost`` (FLARE's POC then listens on loopback only) on two
    free ports; the POC workspace is ``workspace`` and the services are stopped afterwards.
    """
    from nvflare.recipe import PocEnv

    _clear_summary(server_out)
    workspace.mkdir(parents=True, exist_ok=True)
    project = workspace / "project.yml"
    project.write_text(project_yml(sites, server="localhost", fed_learn_port=_free_port(),
                                   admin_port=_free_port()))
    previous = os.environ.get("NVFLARE_POC_WORKSPACE")
    os.environ["NVFLARE_POC_WORKSPACE"] = str(workspace / "poc")
    env = PocEnv(project_conf_path=str(project), username=ADMIN)
    try:
        run = recipe.run(env)
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            status = run.get_status()
            if status is not None and "FINISHED" in str(status):
                break
            time.sleep(2.0)
        else:
            raise TimeoutError(f"the FLARE job did not finish in {timeout:.0f} s (status {status})")
    finally:
        env.stop(clean_up=False)
        if previous is None:
            os.environ.pop("NVFLARE_POC_WORKSPACE", None)
        else:
            os.environ["NVFLARE_POC_WORKSPACE"] = previous
    return _summary(server_out)


def classes_of(cfg: Config) -> int:
    """The class count of the configured dataset, read from one training and one test image."""
    import dataclasses

    from pgsl.data import load_dataset

    return len(load_dataset(dataclasses.replace(cfg.data, limit_train=1, limit_test=1)).classes)


def run_local(mode: str, cfg: Config, sites: int, out: Path, *, wire_dtype: str = "float32",
              device: str = "cpu") -> dict[str, Any]:
    """Run the job on this machine with ``sites`` sites (``site-1`` ...) in FLARE's ``mode``
    (``simulate`` or ``poc``): the server in ``out/server``, the sites' runs in ``out/sites/<site>``,
    FLARE's workspace in ``out/flare``; run again with the same ``out`` to resume. -> the summary."""
    if mode not in ("simulate", "poc"):
        raise ValueError(f"mode is simulate or poc, got {mode!r}")
    if not 1 <= sites <= 64:
        raise ValueError(f"--sites must lie in 1..64, got {sites}")
    names = [f"site-{i + 1}" for i in range(sites)]
    out = out.resolve()
    recipe = make_recipe(cfg, sites=names, classes=classes_of(cfg), server_out=str(out / "server"),
                         site_out=str(out / "sites"), wire_dtype=wire_dtype, device=device)
    run = simulate if mode == "simulate" else poc
    try:
        return run(recipe, names, server_out=out / "server", workspace=out / "flare")
    except RuntimeError as e:  # FLARE's simulator and POC report a failed job as a RuntimeError
        if isinstance(e, UserError):
            raise
        raise UserError(f"the FLARE job failed: {e}") from e
