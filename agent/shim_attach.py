"""The shim's attached mode: `runc run` wired to a Unix socket instead of out.log.

    agent ──frames (attachwire)── attach.sock ── shim ──pty or pipes── runc run ── dyno

Terminal (``--tty``): the shim opens a host pseudo-terminal, makes its slave
runc's stdin/stdout/stderr and controlling terminal, and runc (config.json
``terminal: true``, foreground mode) creates the dyno's own terminal inside
the container, puts ours in raw mode and copies between the two. A RESIZE
frame sets our terminal's size and sends runc SIGWINCH, which makes runc copy
the size into the container (the dyno sees SIGWINCH). Everything the dyno
writes arrives as STDOUT, as on any terminal.

Pipes: three pipes; runc hands them to the dyno as-is, so stdout and stderr
stay apart and STDIN_EOF closes the dyno's stdin.

Backpressure: output is read only while an agent is connected and fewer than
``OUT_LIMIT`` bytes wait for it; input only while fewer than ``IN_LIMIT``
bytes wait for the dyno. A dyno flooding its output blocks on its own
terminal or pipe; a client flooding stdin blocks in its socket.

The exit: when runc exits, the remaining output is delivered, then an EXIT
frame. If no agent ever attached, the shim holds the output (and status) for
up to ``linger`` seconds for one to arrive; the ``hangup`` file (created by
the agent when it stops the dyno: nobody will come) ends that wait at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import selectors
import signal
import socket
import struct
import subprocess
import termios
import time

from agent import attachwire as wire

OUT_LIMIT = 256 * 1024
IN_LIMIT = 256 * 1024
READ_SIZE = 16 * 1024
DRAIN_AFTER_EXIT = 5.0  # seconds to collect output after runc exits


class Session:
    def __init__(
        self,
        command: list[str],
        sock_path: str,
        *,
        tty: bool,
        rows: int,
        cols: int,
        linger: float,
        hangup_path: str,
    ) -> None:
        self.command = command
        self.hangup_path = hangup_path
        self.tty = tty
        self.linger = linger
        self.sel = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock_path)
        self.listener.bind(sock_path)
        os.chmod(sock_path, 0o600)
        self.listener.listen(4)
        self.listener.setblocking(False)
        self.client: socket.socket | None = None
        self.ever_attached = False
        self.decoder = wire.Decoder()
        self.out_buf = bytearray()
        self.in_buf = bytearray()
        self.eof_wanted = False
        self.in_fd: int | None = None
        self.outputs: dict[int, int] = {}  # fd -> frame kind
        self.size = (rows, cols)
        self.proc: subprocess.Popen[bytes] | None = None
        self.master: int | None = None

    # ----- starting ----------------------------------------------------------

    def start(self) -> None:
        if self.tty:
            master, slave = os.openpty()
            self.master = master
            self._set_size(*self.size)
            # setsid --ctty: a session of runc's own with our terminal as its
            # controlling terminal, so a resize reaches runc as SIGWINCH from
            # the kernel too; done by the exec wrapper, not Python after fork.
            self.proc = subprocess.Popen(
                ["setsid", "--ctty", *self.command],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                close_fds=True,
            )
            os.close(slave)
            self.in_fd = master
            self.outputs = {master: wire.STDOUT}
        else:
            r0, w0 = os.pipe()
            r1, w1 = os.pipe()
            r2, w2 = os.pipe()
            self.proc = subprocess.Popen(
                self.command,
                stdin=r0,
                stdout=w1,
                stderr=w2,
                close_fds=True,
            )
            for fd in (r0, w1, w2):
                os.close(fd)
            self.in_fd = w0
            self.outputs = {r1: wire.STDOUT, r2: wire.STDERR}
        for fd in (self.in_fd, *self.outputs):
            os.set_blocking(fd, False)

    def _set_size(self, rows: int, cols: int) -> None:
        if self.master is None or not rows or not cols:
            return
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        if self.proc is not None and self.proc.poll() is None:
            # The kernel signals the terminal's foreground group (runc) too;
            # saying it directly also covers a runc that lost its terminal.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGWINCH)

    # ----- the loop ----------------------------------------------------------

    def run(self) -> int:
        """Relay until the dyno exited and its output and exit status are delivered."""
        assert self.proc is not None
        exited_at = drain_from = 0.0
        status: int | None = None
        exit_queued = False
        while True:
            now = time.monotonic()
            if status is None:
                code = self.proc.poll()
                if code is not None:
                    # subprocess reports a signal death as -N; shells say 128+N.
                    status = 128 - code if code < 0 else code
                    exited_at = now
                    self._close_input()
            if status is not None:
                if self.client is None:
                    if self.ever_attached or os.path.exists(self.hangup_path):
                        return status  # the client left; status.json still tells
                    if now - exited_at > self.linger:
                        return status  # nobody came for the output
                else:
                    drain_from = drain_from or now
                    if not self.outputs or now - drain_from > DRAIN_AFTER_EXIT:
                        for fd in list(self.outputs):
                            self._drop_output(fd)
                        if not exit_queued:
                            self.out_buf += wire.exit_frame(status)
                            exit_queued = True
                        if not self.out_buf:
                            self._linger_for_client()
                            return status
            self._step(0.05)

    def _linger_for_client(self, timeout: float = 2.0) -> None:
        """After the EXIT frame: half-close, and read until the client hangs up.
        Closing a socket with the client's input unread makes the client's next
        write fail, and its stream then drops the EXIT it has not read yet."""
        client = self.client
        if client is None:
            return
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([client], [], [], left)
            if not ready:
                break
            try:
                if not client.recv(READ_SIZE):
                    break
            except BlockingIOError:
                continue
            except OSError:
                break
        self._drop_client()

    def _step(self, timeout: float) -> None:
        self._register()
        for key, events in self.sel.select(timeout):
            fd = key.fd
            if fd == self.listener.fileno():
                self._accept()
                continue
            if self.client is not None and fd == self.client.fileno():
                if events & selectors.EVENT_READ:
                    self._read_client()
                if events & selectors.EVENT_WRITE and self.client is not None:
                    self._write_client()
                continue
            if events & selectors.EVENT_READ and fd in self.outputs:
                self._read_output(fd)
            if events & selectors.EVENT_WRITE and fd == self.in_fd:
                self._write_input()

    def _register(self) -> None:
        want: dict[int, int] = {self.listener.fileno(): selectors.EVENT_READ}
        if self.client is not None:
            events = 0
            if len(self.in_buf) < IN_LIMIT:
                events |= selectors.EVENT_READ
            if self.out_buf:
                events |= selectors.EVENT_WRITE
            if events:
                want[self.client.fileno()] = events
        if self.in_fd is not None and self.in_buf:
            want[self.in_fd] = want.get(self.in_fd, 0) | selectors.EVENT_WRITE
        if self.client is not None and len(self.out_buf) < OUT_LIMIT:
            for fd in self.outputs:
                want[fd] = want.get(fd, 0) | selectors.EVENT_READ
        current = {k.fd: k.events for k in self.sel.get_map().values()}
        for fd in set(current) - set(want):
            self.sel.unregister(fd)
        for fd, events in want.items():
            if fd not in current:
                self.sel.register(fd, events)
            elif current[fd] != events:
                self.sel.modify(fd, events)

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        if self.client is not None:
            conn.close()  # one client at a time
            return
        conn.setblocking(False)
        self.client = conn
        self.ever_attached = True
        self.decoder = wire.Decoder()

    def _drop_client(self) -> None:
        if self.client is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(self.client)
            self.client.close()
            self.client = None

    def _read_client(self) -> None:
        assert self.client is not None
        try:
            data = self.client.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop_client()
            return
        try:
            frames = self.decoder.feed(data)
        except wire.FrameError:
            self._drop_client()
            return
        for kind, payload in frames:
            if kind == wire.STDIN and not self.eof_wanted:
                self.in_buf += payload
            elif kind == wire.STDIN_EOF:
                self.eof_wanted = True
                if not self.in_buf:
                    self._send_eof()
            elif kind == wire.RESIZE:
                with contextlib.suppress(wire.FrameError, OSError):
                    self._set_size(*wire.parse_resize(payload))

    def _write_client(self) -> None:
        assert self.client is not None
        try:
            sent = self.client.send(self.out_buf)
        except BlockingIOError:
            return
        except OSError:
            self._drop_client()
            return
        del self.out_buf[:sent]

    def _write_input(self) -> None:
        if self.in_fd is None:
            self.in_buf.clear()
            return
        try:
            written = os.write(self.in_fd, self.in_buf)
        except BlockingIOError:
            return
        except OSError:
            # The dyno closed its stdin (or exited): input has nowhere to go.
            self.in_buf.clear()
            return
        del self.in_buf[:written]
        if not self.in_buf and self.eof_wanted:
            self._send_eof()

    def _send_eof(self) -> None:
        if self.in_fd is None:
            return
        if self.tty:
            # A terminal has no EOF of its own: ^D is what a user would type.
            with contextlib.suppress(OSError):
                os.write(self.in_fd, b"\x04")
        else:
            self._close_input()

    def _close_input(self) -> None:
        if self.tty:
            return  # the terminal's master is also the output; closed at the end
        if self.in_fd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(self.in_fd)
            os.close(self.in_fd)
            self.in_fd = None
        self.in_buf.clear()

    def _read_output(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            # A terminal whose other side is gone reads EIO instead of EOF.
            data = b""
        if not data:
            self._drop_output(fd)
            return
        self.out_buf += wire.frame(self.outputs[fd], data)

    def _drop_output(self, fd: int) -> None:
        if fd in self.outputs:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(fd)
            del self.outputs[fd]
            if fd != self.in_fd:
                os.close(fd)

    def close(self) -> None:
        self._drop_client()
        for fd in list(self.outputs):
            self._drop_output(fd)
        if self.master is not None:
            with contextlib.suppress(OSError):
                os.close(self.master)
        elif self.in_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.in_fd)
        self.listener.close()
        self.sel.close()


def run(
    command: list[str],
    sock_path: str,
    *,
    tty: bool,
    rows: int,
    cols: int,
    linger: float,
    hangup_path: str,
) -> int:
    """Run ``command`` (the foreground ``runc run``) attached; returns its exit status."""
    session = Session(
        command, sock_path, tty=tty, rows=rows, cols=cols, linger=linger, hangup_path=hangup_path
    )
    try:
        session.start()
        return session.run()
    finally:
        session.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock_path)
