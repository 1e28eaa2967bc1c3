"""A customer's webhook endpoint for the tests, on 127.0.0.1 only.

It checks every request's Standard Webhooks signature with Python's own
hmac and hashlib (an implementation independent of the notifier's): the
key is the base64 after ``whsec_``, the signed content
``<webhook-id>.<webhook-timestamp>.<body>``, the header one or more
space-separated ``v1,<base64>``. A request with a bad signature gets 401.
The first ``--fail-first`` well-signed requests get 500, later ones 204.

    python webhook_receiver.py --secret whsec_... [--fail-first N]

prints ``PORT <n>`` once listening; ``GET /received`` answers every request
so far as JSON: webhook-id, timestamp, whether the signature was valid,
the status answered and the body as text.
"""

import argparse
import base64
import hashlib
import hmac
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def signature_is_valid(secret, msg_id, timestamp, body, header):
    key = base64.b64decode(secret[len("whsec_"):])
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for candidate in header.split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--secret", required=True)
    parser.add_argument("--fail-first", type=int, default=0)
    args = parser.parse_args()
    received = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            msg_id = self.headers.get("webhook-id", "")
            timestamp = self.headers.get("webhook-timestamp", "")
            valid = signature_is_valid(args.secret, msg_id, timestamp, body, self.headers.get("webhook-signature", ""))
            with lock:
                well_signed = sum(1 for r in received if r["valid"])
                status = 401 if not valid else (500 if well_signed < args.fail_first else 204)
                received.append({"id": msg_id, "timestamp": timestamp, "valid": valid, "status": status,
                                 "body": body.decode("utf-8", "replace")})
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            with lock:
                payload = json.dumps(received).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
