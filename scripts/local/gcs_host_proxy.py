"""A small HTTP proxy in front of fake-gcs-server, for local runs only.

Google's Rust client sends `Host: <hostname>` without the port (Google's
front ends route on the name), and fake-gcs-server v1.54 builds the URL of a
resumable upload session from that header, so the session URL it returns
points at port 80 and the upload fails. This proxy forwards every request
with the upstream's own `Host` and rewrites `Location` headers back to
itself, so `STORAGE_EMULATOR_HOST=<this proxy>` works as it does against
Google. It checks nothing else: the tests put a guard in front of it that
models authentication and permissions.

Usage: python gcs_host_proxy.py LISTEN_PORT UPSTREAM_PORT
Listens on 127.0.0.1 only and forwards to 127.0.0.1 only.
"""
import http.client
import http.server
import sys

CHUNK = 1024 * 1024
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


def make_handler(listen_port, upstream_port):
    upstream_base = f"http://127.0.0.1:{upstream_port}"
    own_base = f"http://127.0.0.1:{listen_port}"

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            pass

        def read_body(self):
            length = self.headers.get("Content-Length")
            if length is not None:
                return self.rfile.read(int(length))
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return bytes(body)
                    body += self.rfile.read(size)
                    self.rfile.readline()
            return b""

        def forward(self):
            body = self.read_body()
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"}
            headers["Host"] = f"127.0.0.1:{upstream_port}"
            headers["Content-Length"] = str(len(body))
            upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=300)
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                self.send_response(response.status, response.reason)
                length = response.getheader("Content-Length")
                for name, value in response.getheaders():
                    if name.lower() in HOP_BY_HOP or name.lower() == "content-length":
                        continue
                    if name.lower() == "location":
                        value = value.replace(upstream_base, own_base).replace("http://127.0.0.1/", own_base + "/")
                    self.send_header(name, value)
                data = response.read() if length is None else None
                self.send_header("Content-Length", str(len(data)) if data is not None else length)
                self.end_headers()
                if self.command == "HEAD":
                    return
                if data is not None:
                    self.wfile.write(data)
                    return
                while True:
                    piece = response.read(CHUNK)
                    if not piece:
                        break
                    self.wfile.write(piece)
            finally:
                upstream.close()

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = forward

    return Handler


def main():
    listen_port, upstream_port = int(sys.argv[1]), int(sys.argv[2])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", listen_port), make_handler(listen_port, upstream_port))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
