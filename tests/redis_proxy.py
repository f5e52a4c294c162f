"""A TCP proxy in front of a test Redis that cuts its clients off at one chosen command, for fault tests.

Armed with a byte pattern, it watches what clients send. The first chunk that holds the pattern either
never reaches Redis ("drop") or reaches it while its reply never reaches the client ("lose_reply");
then every connection through the proxy is cut and new ones are refused for `seconds`.
"""
import socket
import threading
import time


class RedisProxy:
    """Forwards 127.0.0.1:`port` to the Redis on `target_port`, until armed and triggered."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.pattern: bytes | None = None
        self.mode, self.seconds, self.refused_until = "drop", 0.0, 0.0
        self.fired = threading.Event()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, pattern: bytes, mode: str, seconds: float) -> None:
        """Cut everyone off at the next chunk holding `pattern` ("drop" it, or "lose_reply"), for `seconds`."""
        self.mode, self.seconds, self.pattern = mode, seconds, pattern

    def close(self) -> None:
        self.listener.close()
        self._cut_all()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self.refused_until:
                client.close()
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_client and self.pattern and self.pattern in data:
                    self.pattern = None
                    self.refused_until = time.monotonic() + self.seconds
                    if self.mode == "lose_reply":
                        source.shutdown(socket.SHUT_RDWR)  # the client hears nothing more...
                        sink.sendall(data)  # ...while Redis applies the command
                        time.sleep(0.3)
                    self._cut_all()
                    self.fired.set()
                    return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            source.close()
            sink.close()

    def _cut_all(self) -> None:
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            for end in pair:
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                end.close()
