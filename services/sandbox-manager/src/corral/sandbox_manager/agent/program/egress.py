"""The relay from ``127.0.0.1:<egress_port>`` to the egress proxy's unix socket."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from .protocol import POLL_S


class EgressRelay:
    """Relays each TCP connection to ``127.0.0.1:port`` to the egress proxy's unix socket.

    The listening thread is started with the agent (before any tool runs); each connection gets two
    pumping threads, and at most ``limit`` connections are relayed at once (more wait in the backlog).
    """

    def __init__(self, socket_path: str, port: int, limit: int) -> None:
        self.socket_path = socket_path
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(128)
        self.slots = threading.BoundedSemaphore(limit)

    def start(self) -> None:
        threading.Thread(target=self.accept_forever, daemon=True).start()

    def accept_forever(self) -> None:
        while True:
            self.slots.acquire()
            try:
                client, _ = self.listener.accept()
            except OSError:
                self.slots.release()
                time.sleep(POLL_S)
                continue
            try:
                threading.Thread(target=self.relay, args=(client,), daemon=True).start()
            except RuntimeError:  # no thread to be had (the pids limit is reached): refuse this one
                client.close()
                self.slots.release()

    def relay(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.socket_path)
            back = threading.Thread(target=self.pump, args=(upstream, client), daemon=True)
            back.start()
            self.pump(client, upstream)
            back.join()
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()
            self.slots.release()

    @staticmethod
    def pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
