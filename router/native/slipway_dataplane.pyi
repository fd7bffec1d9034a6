# Types of the extension module built from router/native (src/lib.rs).
class DataPlane:
    def __init__(
        self,
        *,
        workers: int = 1,
        public_port: int = 80,
        proto: str = "http",
        connect_timeout: float = 5.0,
        response_timeout: float = 30.0,
        idle_timeout: float = 55.0,
        log_bytes_per_app: int = 1048576,
        quarantine: float = 5.0,
        max_attempts: int = 10,
        max_inflight_per_dyno: int = 50,
        backlog_per_dyno: int = 50,
        boot_timeout: float = 75.0,
        upstream_idle_timeout: float = 1.5,
        upstream_pool_size: int = 64,
        body_idle_timeout: float = 55.0,
    ) -> None: ...
    def listen(self, address: str) -> int: ...
    def set_routes(
        self, routes: dict[str, tuple[str, int, bool, bool, bool, bool, list[tuple[str, str]]]]
    ) -> None: ...
    def set_pages(self, pages: dict[str, tuple[str, str, int, bytes, bytes]]) -> None: ...
    def take_logs(self) -> list[tuple[str, bytes]]: ...
    def counters(self) -> dict[str, int]: ...
    def stop(self) -> None: ...
