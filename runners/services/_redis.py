"""redis-server (the Debian package) on settings.redis.host:port, daemonized.

.state/redis/redis.conf    generated on every start
.state/redis/data/         its working dir (no persistence: the feature store is rebuilt
                           from the stream, so a restart starts empty)
.state/redis/logs/redis.log
"""

from __future__ import annotations

import shutil
import subprocess
from typing import TYPE_CHECKING

from pipelines.connections import redis_client, secret
from runners.services._proc import ServiceError, port_open, spawn
from runners.services._service import LocalService
from transforms.settings import Settings

if TYPE_CHECKING:
    import redis


class Redis(LocalService):
    """The feature store and catalog."""

    name = "redis"
    start_timeout = 20.0
    port_settings = "redis.port"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.host, self.port = settings.redis.host, settings.redis.port
        self.config = self.home / "redis.conf"

    @property
    def endpoint(self) -> str:
        """host:port."""
        return f"{self.host}:{self.port}"

    @property
    def ports(self) -> list[tuple[str, int]]:
        """The one port."""
        return [(self.host, self.port)]

    def _client(self) -> redis.Redis:
        return redis_client(self.settings.redis, socket_timeout=2, socket_connect_timeout=2)

    def healthy(self) -> bool:
        """PING answers."""
        if not port_open(self.host, self.port):
            return False
        import redis

        try:
            with self._client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def launch(self) -> None:
        """Write redis.conf and start redis-server, which daemonizes itself."""
        server = shutil.which("redis-server")
        if not server:
            raise ServiceError("redis: redis-server not installed: run runners/bootstrap.sh")
        data = self.home / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.config.touch(mode=0o600)
        self.config.chmod(0o600)  # it may hold the password (below)
        self.config.write_text(
            f"bind {self.host}\n"
            f"port {self.port}\n"
            "protected-mode yes\n"
            "daemonize yes\n"
            f"pidfile {self.home / 'redis.pid'}\n"
            f"logfile {self.main_log}\n"
            f"dir {data}\n"
            'save ""\n'
            "appendonly no\n"
            # redis rewrites its process title; keep the config path in it so `down` finds it.
            'proc-title-template "{title} {listen-addr} {server-mode} {config-file}"\n'
            + self._auth_config()
        )
        proc = spawn([server, str(self.config)], self.logs / "redis-server.out")
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired as exc:
            raise ServiceError("redis: redis-server did not daemonize within 15s") from exc
        if code != 0:
            raise ServiceError(f"redis: redis-server exited with {code}; see {self.logs}")

    def _auth_config(self) -> str:
        """AUTH as settings.redis says, so the clients' credentials work here too."""
        r = self.settings.redis
        password = secret("redis.password", r.password_env, r.password_file)
        if password is None:
            return ""
        if r.username:
            # The ACL user gets everything; the default user is switched off.
            return (f"user default off\nuser {_quoted(r.username)} on {_quoted('>' + password)} "
                    "~* &* +@all\n")
        return f"requirepass {_quoted(password)}\n"

    def shutdown(self, timeout: float) -> None:
        """SHUTDOWN NOSAVE (the data is disposable)."""
        import redis

        try:
            with self._client() as client:
                client.shutdown(nosave=True)
        except redis.RedisError:
            pass  # the server closes the connection as it exits; `stop` checks the pid


def _quoted(text: str) -> str:
    """A redis.conf string argument."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
