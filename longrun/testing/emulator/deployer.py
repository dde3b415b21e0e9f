"""Deploying a function on the emulator: its checkpoint store, its task definition in moto,
its code on the Invoke API's ``GetFunction``, and its safety net."""

from __future__ import annotations

import contextlib
import io
import os
import urllib.request
import uuid
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from ...errors import LongrunError
from ...stores.base import CheckpointStore
from .core import Core
from .environment import Environments
from .fargate import FargateInMoto
from .functions import KillAfter, LocalFunction
from .helpers import DEFAULT_RETRY_DELAYS_S, LONGRUN_ROOT, SAFETY_NET_HANDLER, parse_handler
from .xray import XRayDaemon


class Deployer:
    """Deploys functions: :meth:`LocalLambda.deploy`."""

    def __init__(self, core: Core, fargate: FargateInMoto, environments: Environments) -> None:
        self._core = core
        self._fargate = fargate
        self._environments = environments

    def deploy(
        self,
        handler: str,
        *,
        name: str | None = None,
        timeout_s: float = 3.0,
        memory_mb: int = 128,
        env: Mapping[str, str] | None = None,
        store: str | None = None,
        max_hops: int | None = None,
        retries: int = 2,
        retry_delays_s: Sequence[float] = DEFAULT_RETRY_DELAYS_S,
        duplicate_rate: float = 0.0,
        duplicate_delay_s: float | None = None,
        escalate: bool = True,
        on_failure: str | bool | None = None,
        kill_after: KillAfter | None = None,
        cwd: str | os.PathLike[str] | None = None,
        pythonpath: Sequence[str | os.PathLike[str]] = (),
        tracing: bool = False,
    ) -> LocalFunction:
        """Deploy a function: see :meth:`LocalLambda.deploy`."""
        code_dir, module_handler = parse_handler(handler, cwd)
        name = name or _function_name(module_handler)
        if name in self._core.functions:
            raise LongrunError(f"a function named {name!r} is already deployed")
        if timeout_s <= 0 or not 0.0 <= duplicate_rate <= 1.0 or retries < 0:
            raise LongrunError("timeout_s must be > 0, duplicate_rate in [0, 1], retries >= 0")
        store_uri, reader = self._store(store, name)
        function = LocalFunction(
            name=name,
            handler=module_handler,
            code_dir=code_dir,
            timeout_s=float(timeout_s),
            memory_mb=int(memory_mb),
            env=dict(env or {}),
            retries=retries,
            retry_delays_s=tuple(float(d) for d in retry_delays_s),
            duplicate_rate=float(duplicate_rate),
            duplicate_delay_s=float(timeout_s if duplicate_delay_s is None else duplicate_delay_s),
            on_failure=None,
            store_uri=store_uri,
            store=reader,
            max_hops=max_hops,
            escalate=escalate,
            kill_after=kill_after,
            pythonpath=tuple(os.fspath(p) for p in pythonpath),
            tracing=tracing,
        )
        if tracing:
            with self._core.cond:
                if self._core.xray is None:
                    self._core.xray = XRayDaemon()
        if escalate:
            configuration = self._environments.config_env(function)
            function.task_definition = self._fargate.register_task_definition(
                function, configuration
            )
        self._add(function)
        if on_failure is None and escalate:
            on_failure = True
        if on_failure is True:
            function.on_failure = self._deploy_safety_net(function).name
        elif isinstance(on_failure, str):
            function.on_failure = on_failure
        return function

    def _add(self, function: LocalFunction) -> None:
        with self._core.cond:
            self._core.functions[function.name] = function
        self._core.endpoint.functions = frozenset(self._core.functions)
        if function.handler != SAFETY_NET_HANDLER:
            # GetFunction, for the runner's function mode (the safety net runs an undecorated
            # function's failed event that way): the code directory as the deployment package.
            package = _zip_code(function.code_dir)
            if package is not None:
                self._core.endpoint.add_function(
                    function.name,
                    handler=function.handler,
                    zip_bytes=package,
                    environment=self._environments.config_env(function),
                )

    def _deploy_safety_net(self, protected: LocalFunction) -> LocalFunction:
        name = f"{protected.name}-safety-net"
        if name in self._core.functions:
            return self._core.functions[name]
        env = {k: v for k, v in protected.env.items() if k.startswith(("LONGRUN_", "AWS_"))}
        net = LocalFunction(
            name=name,
            handler=SAFETY_NET_HANDLER,
            code_dir=LONGRUN_ROOT,
            timeout_s=30.0,
            memory_mb=128,
            env=env,
            retries=protected.retries,
            retry_delays_s=protected.retry_delays_s,
            duplicate_rate=0.0,
            duplicate_delay_s=0.0,
            on_failure=None,
            store_uri=protected.store_uri,
            store=protected.store,
            max_hops=None,
            escalate=True,
            task_definition=protected.task_definition,
        )
        self._add(net)
        return net

    def _store(self, store: str | None, name: str) -> tuple[str, CheckpointStore]:
        from ...stores.file import FileStore
        from ...stores.s3 import S3Store

        if store in (None, "file"):
            path = self._core.workdir / "checkpoints"
            return path.as_uri() + "/", FileStore(path)
        assert store is not None
        if store.startswith("file://"):
            path = Path(urllib.request.url2pathname(store[len("file://") :]))
            return store, FileStore(path)
        if store == "s3":
            store = f"s3://longrun-local-{uuid.uuid4().hex[:12]}/runs/"
        if store.startswith("s3://"):
            bucket, _, prefix = store[len("s3://") :].partition("/")
            if not bucket:
                raise LongrunError(f"store {store!r} names no bucket: use s3://BUCKET/PREFIX/")
            client = self._core.moto.client("s3")
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                client.create_bucket(Bucket=bucket)
            return store, S3Store(bucket, prefix=prefix, client=client)
        raise LongrunError(
            f"store {store!r}: use 'file', file:///PATH, 's3' or s3://BUCKET/PREFIX/"
        )


def _function_name(handler: str) -> str:
    module = handler.rsplit(".", 1)[0].replace(".", "-").replace("_", "-")
    return f"{module}-local"[:64]


_SKIP_DIRS = {"__pycache__", "node_modules", "venv", "site-packages"}
_MAX_PACKAGE = 50 * 1024 * 1024


def _zip_code(root: Path) -> bytes | None:
    """``root`` as a deployment package (Python files and data, no caches or virtualenvs);
    ``None`` if it is larger than Lambda's 50 MB zip limit."""
    buffer = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
            for name in sorted(files):
                path = Path(folder) / name
                if name.startswith(".") or name.endswith((".pyc", ".pyo")):
                    continue
                total += path.stat().st_size
                if total > _MAX_PACKAGE:
                    return None
                archive.write(path, path.relative_to(root).as_posix())
    return buffer.getvalue()
