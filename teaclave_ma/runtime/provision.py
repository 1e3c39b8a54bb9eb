"""Init-time attestation (``teaclave-ma run``): start the image's own program, after
attestation, with its secrets and unsealed files, so that it needs no attestation code.

Everything that decides what runs is measured: the program, its arguments and its
environment come from ``run:`` in service.yaml; the host may only pass the few variables
``run.pass_env`` names, from ``PASS_ENV_ALLOWED``. The image's files, unsealed, and the
secrets listed under ``provision`` are written (0600) into a fresh private directory
(0700), made under runtime.yaml's ``provision_dir`` or else the system's temporary
directory, and the program runs there as a child of this process, which forwards SIGINT,
SIGTERM and SIGHUP to it. The directory is removed when the job ends, however it ends,
and also when a step before the start fails: no plaintext outlives the job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType, TracebackType

from teaclave_ma.enclave.image import EnclaveImage
from teaclave_ma.errors import ConfigError, InputError
from teaclave_ma.formats.runtime_config import RuntimeConfig
from teaclave_ma.formats.service_config import PYTHON, RUN_SETS, RunConfig
from teaclave_ma.runtime.service_runtime import EnclaveNode
from teaclave_ma.secrets.sealing import SUFFIX, sealing_secret_name, unseal_bytes

log = logging.getLogger(__name__)

FIXED_PATH = "/usr/bin:/bin"
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_job(
    image: EnclaveImage,
    runtime: RuntimeConfig,
    manifest_path: Path,
    signatures_dir: Path,
    host_environment: Mapping[str, str],
    *,
    initialize_state: bool = False,
) -> int:
    """Attest, provision, run the image's program and wait for it. Returns its exit
    status; 128 + N when signal N ended it, or ended the launch before it started.

    Call from the main thread, where signal handlers can be installed.
    """
    job = check_job(image)
    name = image.service.name
    try:
        with (
            _SignalForwarder() as signals,
            private_directory(runtime.provision_dir, name) as directory,
        ):
            try:
                node = EnclaveNode(
                    image,
                    runtime,
                    manifest_path,
                    signatures_dir,
                    initialize_state=initialize_state,
                )
                try:
                    secrets = provision(node, directory)
                finally:
                    node.close()
                environment = job_environment(job, host_environment, directory, secrets)
                argv = [_program_path(job.command[0], directory), *job.command[1:]]
                log.info(
                    "%s: attested and provisioned in %s; starting %s",
                    name,
                    directory,
                    " ".join(job.command),
                )
                status = signals.run(argv, directory, environment)
            finally:
                signals.hold()  # from here on no signal may cut the removal short
    except JobInterrupted as interrupted:
        log.warning(
            "%s: %s before the job started; nothing ran and its directory is removed",
            name,
            signal.Signals(interrupted.signum).name,
        )
        return 128 + interrupted.signum
    log.info("%s: the job exited with status %d; its directory is removed", name, status)
    return status


def check_job(image: EnclaveImage) -> RunConfig:
    """What can be decided from the measured image alone, checked before attestation so
    that a job that cannot start asks the kms for nothing."""
    service = image.service
    if service.run is None:
        raise ConfigError("run", "service.yaml has no run section: the image declares no program")
    files = laid_out_files(image.content)
    program = service.run.command[0]
    if program != PYTHON and not program.startswith("/") and program not in files:
        raise ConfigError(
            "run.command[0]",
            f"{program!r} is not a file of the image (programs are never looked up in PATH: "
            f"give {PYTHON}, an absolute path or a path inside the image)",
        )
    taken = {*RUN_SETS, *dict(service.run.env), *service.run.pass_env}
    for secret in service.provision:
        where = f"provision.{secret.name}"
        if secret.file is not None:
            if secret.file in files:
                raise ConfigError(f"{where}.file", f"{secret.file} is already a file of the job")
            files.add(secret.file)
        elif secret.env is not None:
            if secret.env in taken:
                raise ConfigError(f"{where}.env", f"{secret.env} is already set for the job")
            taken.add(secret.env)
    return service.run


def laid_out_files(content: Mapping[str, bytes]) -> set[str]:
    """The paths the image's files get in the job's directory: sealed ones unsealed."""
    files: set[str] = set()
    for path in content:
        name = path.removesuffix(SUFFIX)
        if name in files:
            raise ConfigError(path, f"the image holds both {name} and {name}{SUFFIX}")
        files.add(name)
    return files


@contextlib.contextmanager
def private_directory(parent: Path | None, service: str) -> Iterator[Path]:
    """A fresh 0700 directory for one job (under ``parent``, or the system's temporary
    directory), removed with everything in it when the block ends, however it ends."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=f"{service}-", dir=parent))
    try:
        yield directory
    finally:
        _remove(directory)


def _remove(directory: Path) -> None:
    try:
        shutil.rmtree(directory)
    except OSError:
        # The job may have left a directory it made unreadable or read-only; take it back.
        os.chmod(directory, 0o700)
        for current, subdirectories, _files in os.walk(directory):
            for subdirectory in subdirectories:
                path = Path(current, subdirectory)
                if not path.is_symlink():
                    path.chmod(0o700)
        shutil.rmtree(directory)


def provision(node: EnclaveNode, directory: Path) -> dict[str, str]:
    """Write the image's files, unsealed, and the file secrets into ``directory``; the
    secrets the job gets in its environment."""
    service = node.image.service
    content = node.image.content  # the verified bytes, not a second read of the files
    program = service.run.command[0] if service.run is not None else None
    sealed = any(path.endswith(SUFFIX) for path in content)
    key = node.context.secret(sealing_secret_name(service.name)) if sealed else None
    root = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for stored, data in content.items():
            if stored.endswith(SUFFIX):
                assert key is not None  # fetched above: there is a sealed file
                plaintext = unseal_bytes(key, data, stored)
            else:
                plaintext = data
            path = stored.removesuffix(SUFFIX)
            # The program must be executable; nothing else is.
            write_new_file(root, path, plaintext, 0o700 if path == program else 0o600)
        environment: dict[str, str] = {}
        for secret in service.provision:
            value = node.context.secret(secret.name)
            if secret.file is not None:
                write_new_file(root, secret.file, value.reveal(), 0o600)
            elif secret.env is not None:
                try:
                    environment[secret.env] = value.reveal().decode()
                except UnicodeDecodeError:
                    raise InputError(
                        f"provision.{secret.name}.env",
                        "a secret passed in the environment must be UTF-8",
                    ) from None
    finally:
        os.close(root)
    return environment


def write_new_file(root_fd: int, relative: str, data: bytes, mode: int) -> None:
    """Create ``relative`` under the directory open as ``root_fd``: every step is opened
    without following links, and the file must not exist yet. Not atomic: nothing reads
    the directory before the job starts, and a failure removes all of it."""
    *parents, name = relative.split("/")
    opened: list[int] = []
    try:
        parent = root_fd
        for part in parents:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o700, dir_fd=parent)
            parent = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
            opened.append(parent)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(name, flags, mode, dir_fd=parent)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(fd, mode)  # exactly ``mode``, whatever the umask
            handle.write(data)
    finally:
        for fd in opened:
            os.close(fd)


def job_environment(
    job: RunConfig,
    host_environment: Mapping[str, str],
    directory: Path,
    secrets: Mapping[str, str],
) -> dict[str, str]:
    """The job's whole environment: nothing of the host's but the ``pass_env`` variables
    (check_job has made sure no two sources set one name)."""
    environment = {"PATH": FIXED_PATH, "HOME": str(directory), **dict(job.env)}
    environment.update(
        {name: host_environment[name] for name in job.pass_env if name in host_environment}
    )
    dropped = sorted(set(host_environment) - set(job.pass_env))
    if dropped:
        log.debug("not passed to the job from the host: %s", ", ".join(dropped))
    return {**environment, **secrets}


def _program_path(program: str, directory: Path) -> str:
    if program == PYTHON:
        return sys.executable
    return program if program.startswith("/") else str(directory / program)


class JobInterrupted(BaseException):
    """A forwarded signal arrived before the job started: the launch is abandoned.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` on the way
    swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _SignalForwarder:
    """SIGINT, SIGTERM and SIGHUP: before the job starts they abandon the launch (the
    private directory is still removed); once it runs they are passed on to it; once it
    is over (``hold``) they are ignored, so that they cannot interrupt the removal."""

    def __init__(self) -> None:
        self._child: subprocess.Popen[bytes] | None = None
        self._spawning = False
        self._pending: list[int] = []
        self._interrupted = False
        self._held = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _SignalForwarder:
        for signum in FORWARDED_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def hold(self) -> None:
        self._held = True

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self._child is not None:
            self._child.send_signal(signum)  # a no-op once the child has been reaped
        elif self._spawning:
            self._pending.append(signum)  # forwarded as soon as the child exists
        elif not (self._interrupted or self._held):
            self._interrupted = True
            raise JobInterrupted(signum)

    def run(self, argv: list[str], directory: Path, environment: dict[str, str]) -> int:
        self._spawning = True
        try:
            # Its own process group: a terminal's ^C reaches the job once, through us.
            child = subprocess.Popen(  # the measured run.command
                argv, cwd=directory, env=environment, umask=0o077, process_group=0
            )
        except BaseException:
            self._spawning = False
            raise
        self._child = child
        for signum in self._pending:
            child.send_signal(signum)
        status = child.wait()
        return status if status >= 0 else 128 - status
