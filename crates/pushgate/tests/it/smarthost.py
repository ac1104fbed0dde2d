"""A relay for the bounce tests: aiosmtpd (from PyPI, not ours) on 127.0.0.1.

Usage: smarthost.py PORT OUTDIR [--starttls CERT KEY] [--auth USER:PASSWORD]
Listens on PORT (prints "listening PORT" once it accepts), and writes each message it
accepts to OUTDIR/<n>.json: {"mail_from", "rcpt_tos", "report"}, where "report" is the message
read with Python's email package — its content type and report-type, the recipient blocks of
its message/delivery-status part, its text part, the quoted headers, Message-ID and From/To.
With --starttls it requires STARTTLS before MAIL; with --auth, AUTH (over TLS only) with that
user and password, refusing anything else. Each record says whether the session was TLS and
who authenticated. Runs until killed.
"""

import email
import email.policy
import json
import os
import ssl
import sys
import threading
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


def read_report(raw: bytes) -> dict:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    out = {
        "content_type": msg.get_content_type(),
        "report_type": msg.get_param("report-type"),
        "from": msg["From"],
        "to": msg["To"],
        "subject": msg["Subject"],
        "message_id": msg["Message-ID"],
        "auto_submitted": msg["Auto-Submitted"],
        "parts": [],
        "recipients": [],
        "per_message": {},
        "text": None,
        "headers": None,
    }
    if not msg.is_multipart():
        return out
    for part in msg.get_payload():
        ctype = part.get_content_type()
        out["parts"].append(ctype)
        if ctype == "text/plain":
            out["text"] = part.get_payload(decode=True).decode("utf-8", "replace")
        elif ctype == "message/delivery-status":
            # The email package reads each field block as a message of its own.
            blocks = part.get_payload()
            out["per_message"] = dict(blocks[0].items())
            out["recipients"] = [dict(b.items()) for b in blocks[1:]]
        elif ctype == "text/rfc822-headers":
            out["headers"] = part.get_payload(decode=True).decode("utf-8", "replace")
    return out


class Keep:
    def __init__(self, outdir):
        self.outdir = outdir
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        doc = {
            "tls": session.ssl is not None,
            "auth_user": session.auth_data.login.decode() if session.auth_data else None,
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "report": read_report(envelope.original_content or envelope.content),
        }
        tmp = os.path.join(self.outdir, f".{self.n}.json")
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, os.path.join(self.outdir, f"{self.n}.json"))
        return "250 OK queued"


def main():
    # aiosmtpd itself still sets its deprecated Session.login_data.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    port, outdir = int(sys.argv[1]), sys.argv[2]
    rest = sys.argv[3:]
    kwargs = {}
    if "--starttls" in rest:
        i = rest.index("--starttls")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(rest[i + 1], rest[i + 2])
        kwargs.update(tls_context=ctx, require_starttls=True)
    if "--auth" in rest:
        user, password = rest[rest.index("--auth") + 1].split(":", 1)

        def check(server, session, envelope, mechanism, auth_data):
            ok = (auth_data.login.decode(), auth_data.password.decode()) == (user, password)
            return AuthResult(success=ok, handled=False, auth_data=auth_data)

        kwargs.update(authenticator=check, auth_required=True, auth_require_tls=True)
    controller = Controller(Keep(outdir), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    print(f"listening {port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
