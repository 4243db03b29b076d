"""Install the daemon as a user service: a systemd user unit on Linux, a launchd agent on macOS.

The same package installs the broker (``claudemesh broker install-service``): the unit is
data (:class:`ServiceUnit`: names, command, user or system scope), :data:`DAEMON_UNIT` the
daemon's, and everything below holds for both except where it names the daemon.

Theory of operation. The service runs ``<python> -m claudemesh daemon up --foreground``
with the interpreter and the ``CLAUDEMESH_CONFIG_DIR`` (and ``CLAUDEMESH_DAEMON_DIR``, when
set) of the CLI that installed it, so the service and the CLI always mean the same daemon
directory. The interpreter path is kept as given, never resolved: a virtualenv's
``bin/python`` is a symlink, and resolving it would lose the virtualenv.

Everything that decides is pure: :mod:`.units` builds the file
(:func:`render_systemd_unit`, :func:`render_launchd_plist`), :mod:`.plan` lists the
commands around the one file write or removal (:func:`install_plan`,
:func:`uninstall_plan`) and reads the environment (:func:`detect_ci`). :mod:`.install`
(:func:`install`, :func:`uninstall`) only writes or removes that file and hands the
commands to an injectable runner, so tests need neither systemd nor launchd, and a dry
run lists exactly what a real run would do.

Restarts. systemd: ``Type=notify``, so a start succeeds only once the daemon has sent
``READY=1`` (:mod:`claudemesh.daemon.notify`) and ``systemctl --user enable --now``
returns after the API answers, or fails with the daemon's own error. It restarts after a
failure, 5 s apart, at most 5 starts in 300 s, and never after exit 4 (host fingerprint
mismatch) or 6 (broker incompatible), which no restart can fix. launchd:
``KeepAlive.SuccessfulExit = false`` restarts only after a failure, no faster than
``ThrottleInterval``; launchd has no way to exempt exit codes, so exits 4 and 6 are retried
every 5 s until the operator fixes the cause the log names.

Logs. Under systemd the foreground daemon's JSON lines on stderr go to journald
(``journalctl --user -u claudemesh-daemon.service``); under launchd, to ``daemon.log`` in
the daemon directory.

Failures. The refusals (CI without ``allow_ci``, an unsupported OS, relative paths) raise
:class:`~claudemesh.errors.ConfigError` before anything is touched. Everything after
that is reported in the :class:`InstallReport`, never raised: a container without a user
bus gets its unit file and a report saying that ``systemctl`` failed and why.
"""

from __future__ import annotations

from claudemesh.daemon.service.install import (
    CommandRun,
    InstallReport,
    Runner,
    install,
    run_command,
    service_state,
    uninstall,
)
from claudemesh.daemon.service.plan import (
    CI_REFUSAL,
    CommandResult,
    OnFailure,
    Plan,
    Step,
    detect_ci,
    install_plan,
    linger_warning,
    uninstall_plan,
)
from claudemesh.daemon.service.units import (
    DAEMON_ARGS,
    DAEMON_UNIT,
    LAUNCHD_LABEL,
    SYSTEMD_UNIT,
    ServicePlatform,
    ServiceSpec,
    ServiceUnit,
    detect_platform,
    render_launchd_plist,
    render_systemd_unit,
    render_unit_file,
    spec_from_env,
    unit_installed,
    unit_path,
)

__all__ = [
    "CI_REFUSAL",
    "DAEMON_ARGS",
    "DAEMON_UNIT",
    "LAUNCHD_LABEL",
    "SYSTEMD_UNIT",
    "CommandResult",
    "CommandRun",
    "InstallReport",
    "OnFailure",
    "Plan",
    "Runner",
    "ServicePlatform",
    "ServiceSpec",
    "ServiceUnit",
    "Step",
    "detect_ci",
    "detect_platform",
    "install",
    "install_plan",
    "linger_warning",
    "render_launchd_plist",
    "render_systemd_unit",
    "render_unit_file",
    "run_command",
    "service_state",
    "spec_from_env",
    "uninstall",
    "uninstall_plan",
    "unit_installed",
    "unit_path",
]
