"""A merchant's webhook endpoint that verifies with the official Standard Webhooks library
(PyPI `standardwebhooks`): the receiver docs/merchants.md shows, runnable.

    MERCHANT_SECRETS='{"atlas-home": "whsec_..."}' python3 merchant_endpoint.py

listens on 127.0.0.1 (PORT, or a free port), prints `listening <port>`, and answers
POST /<merchant>/webhook with 204 when the signature verifies against that merchant's
secret, 400 otherwise. It also refuses a `webhook-id` it has already taken (a replay).
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRETS = json.loads(os.environ["MERCHANT_SECRETS"])
SEEN = set()
LOCK = threading.Lock()


class Endpoint(BaseHTTPRequestHandler):
    def do_POST(self):
        parts = self.path.strip("/").split("/")
        secret = SECRETS.get(parts[0]) if len(parts) == 2 and parts[1] == "webhook" else None
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if secret is None:
            return self.answer(404, "no such merchant")
        try:
            event = Webhook(secret).verify(body, dict(self.headers))
        except WebhookVerificationError as e:
            return self.answer(400, f"not verified: {e}")
        webhook_id = self.headers["webhook-id"]
        with LOCK:
            if webhook_id in SEEN:
                return self.answer(204, "")  # already handled: acknowledge, do nothing
            SEEN.add(webhook_id)
            print(f"verified {parts[0]} {event['type']} {webhook_id}", flush=True)
        self.answer(204, "")

    def answer(self, code, text):
        self.send_response(code)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(text.encode())))
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "0"))), Endpoint)
print(f"listening {server.server_address[1]}", flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    sys.exit(0)
