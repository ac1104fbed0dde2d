"""An SMTP client written with Python's smtplib, for the SMTP tests.

Usage: smtp_client.py HOST PORT MESSAGE_FILE FROM RCPT[,RCPT...] [--starttls CAFILE]
       [--login USER PASSWORD_ENV [--mechanism PLAIN|LOGIN] [--tries N]] [--size N]
Prints one JSON document: the code and text of every step, in order. A step that fails ends
the transaction (the JSON still says what happened).
"""
import json
import os
import smtplib
import ssl
import sys

host, port, message_file, sender, rcpts = sys.argv[1:6]
args = sys.argv[6:]
steps = []


def step(name, code, text):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    steps.append({"step": name, "code": code, "text": text})


with open(message_file, "rb") as f:
    message = f.read()

s = smtplib.SMTP(host, int(port), timeout=30)
try:
    code, text = s.ehlo("python-client")
    step("ehlo", code, text)
    if "--starttls" in args:
        ca = args[args.index("--starttls") + 1]
        code, text = s.starttls(context=ssl.create_default_context(cafile=ca))
        step("starttls", code, text)
        code, text = s.ehlo("python-client")
        step("ehlo", code, text)
    if "--login" in args:
        i = args.index("--login")
        user, password = args[i + 1], os.environ[args[i + 2]]
        # --tries N: that many AUTH attempts in the session, as "auth", "auth 2", ...
        tries = int(args[args.index("--tries") + 1]) if "--tries" in args else 1
        for n in range(1, tries + 1):
            try:
                if "--mechanism" in args:
                    mechanism = args[args.index("--mechanism") + 1]
                    s.user, s.password = user, password
                    code, text = s.auth(mechanism, getattr(s, "auth_" + mechanism.lower()))
                else:
                    code, text = s.login(user, password)
            except smtplib.SMTPException as e:
                code, text = getattr(e, "smtp_code", 0), str(getattr(e, "smtp_error", e))
            step("auth" if n == 1 else f"auth {n}", code, text)
            if code == 235 or code == 421:
                break
        if code != 235:
            raise SystemExit(print(json.dumps(steps)))
    options = ["BODY=8BITMIME"]
    if "--size" in args:
        options.append("SIZE=" + args[args.index("--size") + 1])
    code, text = s.mail(sender, options)
    step("mail", code, text)
    accepted = 0
    if code == 250:
        for r in rcpts.split(","):
            code, text = s.rcpt(r)
            step("rcpt " + r, code, text)
            accepted += code == 250
    if accepted:
        try:
            code, text = s.data(message)
        except smtplib.SMTPDataError as e:
            code, text = e.smtp_code, e.smtp_error
        step("data", code, text)
    code, text = s.quit()
    step("quit", code, text)
except smtplib.SMTPException as e:
    step("error", getattr(e, "smtp_code", 0), str(e))
print(json.dumps(steps))
