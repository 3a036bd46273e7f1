"""A fake EC2 instance metadata service (IMDSv2) on loopback, for ARCH's tests.

It speaks the real session protocol:
  PUT /latest/api/token  with X-aws-ec2-metadata-token-ttl-seconds: N (1-21600)
      -> 200 and a token valid for N seconds (400 when the header is missing or invalid,
         403 when the request carries X-Forwarded-For, as the real service does)
  GET /latest/meta-data/...  with X-aws-ec2-metadata-token: TOKEN
      -> 401 without a token or with an expired or unknown one
  GET /latest/meta-data/spot/instance-action
      -> 404, or 200 {"action": "terminate", "time": "2026-11-21T23:59:00Z"}
  GET /latest/meta-data/events/recommendations/rebalance
      -> 404, or 200 {"noticeTime": "2026-11-21T23:50:00Z"}
  GET /latest/meta-data/instance-id -> a fixed fake id

Tests use it in-process:
    with FakeImds() as imds:
        imds.endpoint                      # "http://127.0.0.1:<free port>"
        imds.set_spot("terminate", in_seconds=120); imds.clear_spot()
        imds.set_rebalance(); imds.clear_rebalance()
        imds.invalidate_tokens()
        imds.set_fault(status=500, delay=1.0, path=SPOT_PATH); imds.clear_fault()
        imds.count(method="PUT", path=TOKEN_PATH, status=200); imds.requests

Standalone, for a person trying archd against it (loopback addresses only):
    python3 fake_imds.py --port 8111 [--print-port] [--verbose]
and the same controls over HTTP, outside the real service's paths:
    curl -X POST   localhost:8111/_fake/spot -d '{"action": "terminate", "in": 120}'
    curl -X DELETE localhost:8111/_fake/spot
    curl -X POST   localhost:8111/_fake/rebalance -d '{}'      (time: now; or "time": ...)
    curl -X DELETE localhost:8111/_fake/rebalance
    curl -X POST   localhost:8111/_fake/invalidate-tokens
    curl -X POST   localhost:8111/_fake/fault -d '{"status": 500, "delay": 1.5, "path": null}'
    curl -X DELETE localhost:8111/_fake/fault
    curl           localhost:8111/_fake/stats
"""

import argparse
import collections
import datetime
import http.server
import ipaddress
import json
import secrets
import signal
import socket
import sys
import threading
import time

TOKEN_PATH = "/latest/api/token"
SPOT_PATH = "/latest/meta-data/spot/instance-action"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
INSTANCE_ID_PATH = "/latest/meta-data/instance-id"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TTL = 21600
CONTROL_PREFIX = "/_fake/"

Request = collections.namedtuple("Request", "method path status ttl_header had_token")


def rfc3339(t):
    """Seconds since the epoch as the service writes times: 2026-11-21T23:59:00Z."""
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def _time_text(time_value, default):
    if time_value is None:
        return rfc3339(default)
    if isinstance(time_value, str):
        return time_value
    return rfc3339(time_value)


class FakeImds:
    """The service on host:port (port 0: a free one), served by a thread between start()
    and stop() (or as a context manager). Every method is thread-safe."""

    def __init__(self, host="127.0.0.1", port=0, verbose=False):
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"fake IMDS listens on loopback addresses only, not {host}")
        self._lock = threading.Lock()
        self._tokens = {}  # token -> expiry (time.monotonic())
        self._spot_body = None
        self._rebalance_body = None
        self._fault = {"status": None, "delay": 0.0, "path": None}
        self._requests = []
        self.verbose = verbose
        server_class = (_ThreadingHTTPServerV6 if ipaddress.ip_address(host).version == 6
                        else _ThreadingHTTPServer)
        self._server = server_class((host, port), _Handler)
        self._server.fake = self
        self._thread = None

    # ------------------------------------------------------------ lifecycle
    @property
    def host(self):
        return self._server.server_address[0]

    @property
    def port(self):
        return self._server.server_address[1]

    @property
    def endpoint(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------ controls
    def set_spot(self, action="terminate", time=None, in_seconds=120):
        """A pending spot interruption: `time` (RFC 3339 text or epoch seconds), else now +
        in_seconds. Returns the time text served."""
        text = _time_text(time, _now() + in_seconds)
        self.set_spot_body(json.dumps({"action": action, "time": text}))
        return text

    def set_spot_body(self, body):
        """Serves `body` verbatim (malformed documents included) as the instance-action."""
        with self._lock:
            self._spot_body = body

    def clear_spot(self):
        self.set_spot_body(None)

    def set_rebalance(self, time=None):
        """A rebalance recommendation issued at `time` (default: now). Returns its text."""
        text = _time_text(time, _now())
        self.set_rebalance_body(json.dumps({"noticeTime": text}))
        return text

    def set_rebalance_body(self, body):
        with self._lock:
            self._rebalance_body = body

    def clear_rebalance(self):
        self.set_rebalance_body(None)

    def invalidate_tokens(self):
        """Every token issued so far is unknown from now on (GETs with it get 401)."""
        with self._lock:
            self._tokens.clear()

    def set_fault(self, status=None, delay=0.0, path=None):
        """Metadata requests (to `path` only, when given) wait `delay` seconds, then answer
        `status` instead of the real answer when status is set."""
        with self._lock:
            self._fault = {"status": status, "delay": float(delay), "path": path}

    def clear_fault(self):
        self.set_fault()

    # ------------------------------------------------------------ observations
    @property
    def requests(self):
        """Every metadata request so far (controls excluded), oldest first."""
        with self._lock:
            return list(self._requests)

    def count(self, method=None, path=None, status=None):
        return sum(1 for r in self.requests
                   if (method is None or r.method == method) and
                   (path is None or r.path == path) and (status is None or r.status == status))

    def reset_requests(self):
        with self._lock:
            self._requests.clear()

    def live_tokens(self):
        with self._lock:
            now = time.monotonic()
            return sum(1 for expiry in self._tokens.values() if expiry > now)

    def stats(self):
        counts = collections.Counter(f"{r.method} {r.path} {r.status}" for r in self.requests)
        return {"requests": dict(counts), "live_tokens": self.live_tokens()}

    # ------------------------------------------------------------ the protocol
    def _record(self, method, path, status, headers):
        with self._lock:
            self._requests.append(Request(method, path, status, headers.get(TTL_HEADER),
                                          headers.get(TOKEN_HEADER) is not None))

    def _fault_for(self, path):
        with self._lock:
            fault = dict(self._fault)
        if fault["path"] is not None and fault["path"] != path:
            return None, 0.0
        return fault["status"], fault["delay"]

    def _issue_token(self, headers):
        """(status, body, extra headers) for PUT /latest/api/token."""
        if headers.get("X-Forwarded-For") is not None:
            return 403, "Forbidden", {}
        ttl_text = headers.get(TTL_HEADER)
        try:
            ttl = int(ttl_text.strip()) if ttl_text is not None else None
        except ValueError:
            ttl = None
        if ttl is None or not 1 <= ttl <= MAX_TTL:
            return 400, "Bad Request", {}
        token = secrets.token_urlsafe(40)
        with self._lock:
            self._tokens[token] = time.monotonic() + ttl
        return 200, token, {TTL_HEADER: str(ttl)}

    def _token_valid(self, token):
        with self._lock:
            now = time.monotonic()
            for t in [t for t, expiry in self._tokens.items() if expiry <= now]:
                del self._tokens[t]
            return token is not None and token in self._tokens

    def _metadata(self, path, headers):
        """(status, body) for a GET under /latest/."""
        if not self._token_valid(headers.get(TOKEN_HEADER)):
            return 401, "Unauthorized"
        with self._lock:
            documents = {SPOT_PATH: self._spot_body, REBALANCE_PATH: self._rebalance_body,
                         INSTANCE_ID_PATH: "i-0fa1e0000000a4c40"}
        body = documents.get(path)
        return (200, body) if body is not None else (404, "Not Found")

    def _control(self, method, path, body):
        """(status, JSON-able) for /_fake/... requests."""
        name = path[len(CONTROL_PREFIX):]
        try:
            args = json.loads(body) if body.strip() else {}
        except ValueError:
            return 400, {"error": "body is not JSON"}
        if name == "stats" and method == "GET":
            return 200, self.stats()
        if name == "spot" and method in ("POST", "PUT"):
            return 200, {"time": self.set_spot(args.get("action", "terminate"), args.get("time"),
                                               args.get("in", 120))}
        if name == "rebalance" and method in ("POST", "PUT"):
            return 200, {"time": self.set_rebalance(args.get("time"))}
        if name in ("spot", "rebalance", "fault") and method == "DELETE":
            {"spot": self.clear_spot, "rebalance": self.clear_rebalance,
             "fault": self.clear_fault}[name]()
            return 200, {}
        if name == "invalidate-tokens" and method == "POST":
            self.invalidate_tokens()
            return 200, {}
        if name == "fault" and method in ("POST", "PUT"):
            self.set_fault(args.get("status"), args.get("delay", 0.0), args.get("path"))
            return 200, {}
        return 404, {"error": f"no control {method} {path}"}


def _now():
    return time.time()


class _ThreadingHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # A client that timed out and hung up while a slow answer was pending.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _ThreadingHTTPServerV6(_ThreadingHTTPServer):
    address_family = socket.AF_INET6


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # Keep-alive, as the real service.
    disable_nagle_algorithm = True  # Headers and body go out in two writes.
    server_version = "EC2ws"
    sys_version = ""

    def log_message(self, fmt, *args):
        if self.server.fake.verbose:
            sys.stderr.write("fake_imds: " + (fmt % args) + "\n")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method):
        fake = self.server.fake
        path = self.path.split("?", 1)[0]
        body = self._read_body()
        if path.startswith(CONTROL_PREFIX):
            status, doc = fake._control(method, path, body)
            self._send(status, json.dumps(doc) + "\n", "application/json")
            return
        status, delay = fake._fault_for(path)
        if delay:
            time.sleep(delay)
        extra = {}
        if status is not None:
            text = "Internal Server Error"
        elif path == TOKEN_PATH:
            status, text, extra = fake._issue_token(self.headers) if method == "PUT" else (
                405, "Method Not Allowed", {})
        elif method == "GET" and path.startswith("/latest/"):
            status, text = fake._metadata(path, self.headers)
        else:
            status, text = 404, "Not Found"
        fake._record(method, path, status, self.headers)
        self._send(status, text, "text/plain", extra)

    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length).decode("utf-8", "replace") if length > 0 else ""

    def _send(self, status, text, content_type, extra=None):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def main(argv=None):
    parser = argparse.ArgumentParser(description="A fake EC2 IMDSv2 on loopback (see the "
                                     "module docstring for the /_fake/ controls).")
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address")
    parser.add_argument("--port", type=int, default=8111, help="0: a free port")
    parser.add_argument("--print-port", action="store_true",
                        help="print the port on stdout once listening")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)
    fake = FakeImds(args.host, args.port, verbose=args.verbose)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    with fake:
        if args.print_port:
            print(fake.port, flush=True)
        else:
            print(f"fake IMDS on {fake.endpoint}", file=sys.stderr, flush=True)
        done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
