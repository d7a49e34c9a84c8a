"""A real SMTP server (aiosmtpd) for Baton's mail sink tests and benchmark.

Saves every message it accepts as DIR/NNNNNN.eml with DIR/NNNNNN.json beside it
({"from": ..., "to": [...], "login": user or null}), written atomically.

Usage: python smtp_server.py --dir DIR [--host 127.0.0.1] [--port 0]
                             [--user U --password P] [--delay-ms N]
  --user/--password  offer AUTH PLAIN/LOGIN over the plain connection and accept only
                     these credentials (authentication is then required)
  --delay-ms         wait this long before answering each DATA (a slow server)
Prints "LISTENING <port>" on stdout once it accepts connections.
"""

import argparse
import asyncio
import json
import os
import socket
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Saver:
    def __init__(self, directory, delay_ms):
        self.dir = directory
        self.delay = delay_ms / 1000.0
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        self.n += 1
        base = os.path.join(self.dir, f"{self.n:06d}")
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        meta = {"from": envelope.mail_from, "to": envelope.rcpt_tos, "login": login}
        with open(base + ".json.tmp", "w") as f:
            json.dump(meta, f)
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(base + ".json.tmp", base + ".json")
        os.rename(base + ".eml.tmp", base + ".eml")
        return "250 Message accepted for delivery"


def free_port(host):
    s = socket.socket()
    s.bind((host, 0))
    p = s.getsockname()[1]
    s.close()
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--delay-ms", type=int, default=0)
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    port = args.port or free_port(args.host)
    kwargs = {}
    if args.user:
        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login.decode() == args.user
                and auth_data.password.decode() == args.password
            )
            return AuthResult(success=ok, handled=False, auth_data=auth_data)

        kwargs = dict(authenticator=authenticator, auth_required=True, auth_require_tls=False)
    ctl = Controller(Saver(args.dir, args.delay_ms), hostname=args.host, port=port, **kwargs)
    ctl.start()
    print(f"LISTENING {port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        ctl.stop()


if __name__ == "__main__":
    sys.exit(main())
