"""Local stand-in for the S3 -> Lambda notifications of template.yaml.

moto does not fire S3 event notifications, so this router does: it reads the
routes from the SAM template itself (every `Type: S3` event of every
`AWS::Serverless::Function`, with its prefix/suffix filter rules, and the
function's retry count from its `AWS::Lambda::EventInvokeConfig`), polls the
staging bucket with ListObjectsV2, and for every object created after it
started that a route matches, builds the S3 ObjectCreated event the
notification would carry and invokes the routed function through the local
Lambda runtime of `cargo lambda watch`, retrying a failed invocation as
often as the asynchronous invocation would.

Usage (with the project's .venv/bin/python):

    router.py [--template template.yaml] [--bucket NAME]
              [--invoke-url http://127.0.0.1:9000] [--idle-exit SECONDS]
    router.py --print-routes

It prints one line per routed object, e.g.

    manifests/20261119030000.json -> fanout: ok (runIds=20261119030000 tenants=3 jobsCreated=3 ...)
    jobs/s3/20261119030000/acme/all.json -> deliver-s3: error after 3 attempts (DeliveryFailed: ...)

With --idle-exit it exits once nothing new has arrived for that many seconds
after at least one invocation and none is in flight: 0 if every routed
invocation finally succeeded, 1 otherwise. Environment: AWS_ENDPOINT_URL,
AWS_REGION and credentials as for any boto3 client; STAGING_BUCKET is the
default bucket.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime as dt
import json
import os
import posixpath
import secrets
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_RETRIES = 2  # Lambda's default MaximumRetryAttempts for async invocations
POLL_SECONDS = 0.5


# ----------------------------------------------------------------- template


def load_template(text: str) -> dict:
    """Parses a CloudFormation/SAM template (YAML or JSON). Short-form tags
    (!Ref, !Sub, !GetAtt, ...) become their long form ({"Ref": ...},
    {"Fn::Sub": ...}), plain values the route table can read or ignore."""
    try:
        import yaml
    except ImportError as error:  # pragma: no cover - depends on the venv
        raise SystemExit(
            "router: PyYAML is needed to read template.yaml: .venv/bin/pip install pyyaml"
        ) from error

    class CfnLoader(yaml.SafeLoader):
        pass

    def construct_tag(loader, tag_suffix, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        if tag_suffix == "Ref":
            return {"Ref": value}
        if tag_suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        return {f"Fn::{tag_suffix}": value}

    CfnLoader.add_multi_constructor("!", construct_tag)
    template = yaml.load(text, Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(template, dict) or not isinstance(template.get("Resources"), dict):
        raise ValueError("not a CloudFormation template: no Resources mapping")
    return template


@dataclasses.dataclass(frozen=True)
class Route:
    function: str  # logical id of the AWS::Serverless::Function
    event: str  # logical name of its S3 event
    binary: str  # what `cargo lambda watch` serves it as
    bucket: str  # the bucket the event is on (logical id of a !Ref, or a name)
    prefix: str
    suffix: str
    events: tuple  # S3 event types, e.g. ("s3:ObjectCreated:*",)
    retries: int

    def pattern(self) -> str:
        return f"{self.prefix}*{self.suffix}"


def _ref_target(value):
    """The logical id a !Ref / !GetAtt X.Arn points at, or a plain string."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (name, arg), = value.items()
        if name == "Ref" and isinstance(arg, str):
            return arg
        if name == "Fn::GetAtt" and isinstance(arg, list) and arg:
            return str(arg[0])
    return None


def binary_name(logical_id: str, resource: dict, globals_function: dict) -> str:
    """BuildProperties.Binary, else the folder name of CodeUri."""
    binary = ((resource.get("Metadata") or {}).get("BuildProperties") or {}).get("Binary")
    if isinstance(binary, str) and binary:
        return binary
    props = resource.get("Properties") or {}
    code_uri = props.get("CodeUri", globals_function.get("CodeUri"))
    if isinstance(code_uri, str):
        folder = posixpath.basename(posixpath.normpath(code_uri.replace("\\", "/")))
        if folder not in ("", ".", ".."):
            return folder
    raise ValueError(
        f"{logical_id}: cannot tell its binary: set Metadata.BuildProperties.Binary "
        f"or a CodeUri folder named after the binary (CodeUri is {code_uri!r})"
    )


def retry_counts(resources: dict) -> dict:
    """Function logical id -> MaximumRetryAttempts, from EventInvokeConfig
    resources and SAM's own EventInvokeConfig function property."""
    counts = {}
    names = {}  # a literal FunctionName -> logical id
    for logical_id, resource in resources.items():
        if isinstance(resource, dict) and resource.get("Type") == "AWS::Serverless::Function":
            props = resource.get("Properties") or {}
            if isinstance(props.get("FunctionName"), str):
                names[props["FunctionName"]] = logical_id
            inline = props.get("EventInvokeConfig") or {}
            if "MaximumRetryAttempts" in inline:
                counts[logical_id] = int(inline["MaximumRetryAttempts"])
    for resource in resources.values():
        if not isinstance(resource, dict) or resource.get("Type") != "AWS::Lambda::EventInvokeConfig":
            continue
        props = resource.get("Properties") or {}
        target = _ref_target(props.get("FunctionName"))
        target = names.get(target, target)
        if target in resources and "MaximumRetryAttempts" in props:
            counts[target] = int(props["MaximumRetryAttempts"])
    return counts


def filter_rules(properties: dict) -> tuple:
    """(prefix, suffix) of an S3 event's Filter.S3Key.Rules ("" when absent)."""
    prefix = suffix = ""
    rules = (((properties.get("Filter") or {}).get("S3Key") or {}).get("Rules")) or []
    for rule in rules:
        name = str(rule.get("Name", "")).lower()
        value = rule.get("Value", "")
        if not isinstance(value, str):
            raise ValueError(f"filter rule {rule!r}: only literal values are supported locally")
        if name == "prefix":
            prefix = value
        elif name == "suffix":
            suffix = value
        else:
            raise ValueError(f"filter rule {rule!r}: Name must be prefix or suffix")
    return prefix, suffix


def routes_from_template(template: dict) -> list:
    """Every S3 event of every AWS::Serverless::Function, as Routes."""
    resources = template["Resources"]
    globals_function = ((template.get("Globals") or {}).get("Function")) or {}
    retries = retry_counts(resources)
    routes = []
    for logical_id, resource in resources.items():
        if not isinstance(resource, dict) or resource.get("Type") != "AWS::Serverless::Function":
            continue
        events = ((resource.get("Properties") or {}).get("Events")) or {}
        s3_events = {name: e for name, e in events.items() if isinstance(e, dict) and e.get("Type") == "S3"}
        if not s3_events:
            continue
        binary = binary_name(logical_id, resource, globals_function)
        for event_name, event in s3_events.items():
            props = event.get("Properties") or {}
            prefix, suffix = filter_rules(props)
            kinds = props.get("Events", [])
            kinds = tuple([kinds] if isinstance(kinds, str) else kinds)
            bucket = _ref_target(props.get("Bucket")) or json.dumps(props.get("Bucket"))
            routes.append(Route(
                function=logical_id, event=event_name, binary=binary, bucket=bucket,
                prefix=prefix, suffix=suffix, events=kinds,
                retries=retries.get(logical_id, DEFAULT_RETRIES),
            ))
    return routes


def format_routes(routes: list) -> str:
    lines = []
    for r in routes:
        lines.append(
            f"{r.pattern():<24} -> {r.binary:<14} ({r.function}.{r.event} on {r.bucket}; "
            f"{', '.join(r.events) or 'no events'}; retries {r.retries})"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------ matching


def event_type_matches(patterns, event_name: str) -> bool:
    """Whether S3 event type patterns (s3:ObjectCreated:*, s3:ObjectCreated:Put)
    cover an event name such as ObjectCreated:Put."""
    for pattern in patterns:
        pattern = pattern[3:] if pattern.startswith("s3:") else pattern
        if pattern == event_name or (pattern.endswith(":*") and event_name.startswith(pattern[:-1])):
            return True
    return False


def matching_routes(routes: list, key: str, event_name: str = "ObjectCreated:Put") -> list:
    """The routes S3 would notify for `key` (raw, not encoded): prefix and
    suffix are compared with the key as stored, case-sensitively."""
    return [
        r for r in routes
        if key.startswith(r.prefix) and key.endswith(r.suffix)
        and event_type_matches(r.events, event_name)
    ]


def list_prefixes(routes: list) -> list:
    """The fewest ListObjectsV2 prefixes that cover every route."""
    prefixes = sorted({r.prefix for r in routes})
    kept = []
    for p in prefixes:
        if not any(p.startswith(k) for k in kept):
            kept.append(p)
    return kept


# --------------------------------------------------------------------- event


def encode_key(key: str) -> str:
    """A key as S3 puts it into event notifications: URL-encoded, '+' for a
    space, '/' kept."""
    return urllib.parse.quote_plus(key, safe="/")


def event_name_for(etag: str) -> str:
    """A multipart upload's ETag has a '-<parts>' suffix."""
    return "ObjectCreated:CompleteMultipartUpload" if "-" in etag.strip('"') else "ObjectCreated:Put"


def s3_event(*, bucket: str, key: str, size: int, etag: str, event_time: dt.datetime,
             region: str, sequencer: str, configuration_id: str,
             event_name: str = "ObjectCreated:Put", request_id: str | None = None) -> dict:
    """The S3 notification S3 would send to Lambda for one created object
    (the shape of events/fanout/manifest-created.json)."""
    if event_time.tzinfo is None:
        event_time = event_time.replace(tzinfo=dt.timezone.utc)
    stamp = event_time.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{event_time.microsecond // 1000:03d}Z"
    return {
        "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": region,
            "eventTime": stamp,
            "eventName": event_name,
            "userIdentity": {"principalId": "AWS:AIDALOCALROUTER"},
            "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {
                "x-amz-request-id": request_id or secrets.token_hex(8).upper(),
                "x-amz-id-2": secrets.token_urlsafe(48),
            },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": configuration_id,
                "bucket": {
                    "name": bucket,
                    "ownerIdentity": {"principalId": "A3NL1KOZZKLOCAL"},
                    "arn": f"arn:aws:s3:::{bucket}",
                },
                "object": {
                    "key": encode_key(key),
                    "size": int(size),
                    "eTag": etag.strip('"'),
                    "sequencer": sequencer,
                },
            },
        }]
    }


def shorten(text: str, limit: int = 400) -> str:
    """One line of at most `limit` characters (SDK errors run to kilobytes;
    the whole text is in the function's log)."""
    text = " ".join(str(text).split())
    tail = " ... (cut; see the function log)"
    return text if len(text) <= limit else text[: limit - len(tail)] + tail


def summarise(value, limit: int = 240) -> str:
    """A short one-line summary of a function's JSON result."""
    def flat(v, skip_keys=False):
        if isinstance(v, dict):
            parts = []
            for k, x in v.items():
                if skip_keys and k.endswith("Key"):
                    continue
                if isinstance(x, (dict, list)):
                    inner = flat(x, skip_keys=True)
                    if inner:
                        parts.append(f"{k}={inner}" if not isinstance(x, list) or
                                     all(not isinstance(i, (dict, list)) for i in x) else f"{k}: {inner}")
                else:
                    parts.append(f"{k}={x}")
            return " ".join(parts)
        if isinstance(v, list):
            if all(not isinstance(i, (dict, list)) for i in v):
                return ",".join(str(i) for i in v)
            return "; ".join(flat(i, skip_keys) for i in v)
        return str(v)
    text = flat(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -------------------------------------------------------------------- invoke


class InvokeError(Exception):
    pass


def invoke(invoke_url: str, binary: str, payload: dict, timeout: float) -> object:
    """POSTs an event to the `cargo lambda watch` runtime (the Lambda Invoke
    API) and returns the function's JSON result; a function error raises."""
    url = f"{invoke_url.rstrip('/')}/2015-03-31/functions/{urllib.parse.quote(binary)}/invocations"
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            function_error = response.headers.get("X-Amz-Function-Error")
    except urllib.error.HTTPError as error:
        body = error.read()
        raise InvokeError(describe_error(body) or f"HTTP {error.code} from {url}") from None
    except (urllib.error.URLError, OSError) as error:
        raise InvokeError(f"cannot reach {url}: {getattr(error, 'reason', error)}") from None
    if function_error:
        raise InvokeError(describe_error(body) or f"function error ({function_error})")
    try:
        result = json.loads(body) if body.strip() else None
    except ValueError:
        return body.decode("utf-8", "replace")
    if isinstance(result, dict) and "errorType" in result and "errorMessage" in result and len(result) <= 3:
        raise InvokeError(describe_error(body))
    return result


def describe_error(body: bytes) -> str:
    try:
        error = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:500]
    if isinstance(error, dict) and ("errorMessage" in error or "errorType" in error):
        return f"{error.get('errorType', 'Error')}: {error.get('errorMessage', '')}".strip()
    return json.dumps(error)[:500]


# --------------------------------------------------------------------- poll


class Router:
    def __init__(self, s3, bucket, routes, invoke_url, region, *, timeout, retry_delay,
                 out=sys.stdout, err=sys.stderr):
        self.s3, self.bucket, self.routes = s3, bucket, routes
        self.invoke_url, self.region = invoke_url, region
        self.timeout, self.retry_delay, self.out, self.err = timeout, retry_delay, out, err
        self.prefixes = list_prefixes(routes)
        self.seen = {}  # key -> (etag, last modified)
        self.lock = threading.Lock()
        self.in_flight = 0
        self.invocations = 0
        self.failures = 0
        self.last_activity = time.monotonic()
        self.sequence = time.time_ns()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="invoke")

    def list_objects(self):
        objects = []
        for prefix in self.prefixes:
            paginator = self.s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                objects.extend(page.get("Contents", []))
        return objects

    def snapshot(self):
        """Marks what exists now as seen: only later objects are routed."""
        while True:
            try:
                for obj in self.list_objects():
                    self.seen[obj["Key"]] = (obj["ETag"], obj["LastModified"])
                return
            except self.s3.exceptions.NoSuchBucket:
                time.sleep(POLL_SECONDS)  # created later by the caller

    def poll_once(self):
        try:
            objects = self.list_objects()
        except self.s3.exceptions.NoSuchBucket:
            return 0
        fresh = [o for o in objects if self.seen.get(o["Key"]) != (o["ETag"], o["LastModified"])]
        fresh.sort(key=lambda o: (o["LastModified"], o["Key"]))
        for obj in fresh:
            self.seen[obj["Key"]] = (obj["ETag"], obj["LastModified"])
            name = event_name_for(obj["ETag"])
            for route in matching_routes(self.routes, obj["Key"], name):
                with self.lock:
                    self.in_flight += 1
                    self.last_activity = time.monotonic()
                    self.sequence += 1
                    sequencer = f"{self.sequence:020X}"
                event = s3_event(
                    bucket=self.bucket, key=obj["Key"], size=obj.get("Size", 0), etag=obj["ETag"],
                    event_time=obj["LastModified"], region=self.region, sequencer=sequencer,
                    configuration_id=f"{route.function}{route.event}", event_name=name,
                )
                self.pool.submit(self.deliver, route, obj["Key"], event)
        return len(fresh)

    def deliver(self, route, key, event):
        attempts = 1 + route.retries
        error = None
        try:
            for attempt in range(1, attempts + 1):
                try:
                    result = invoke(self.invoke_url, route.binary, event, self.timeout)
                    self.report(f"{key} -> {route.binary}: ok ({summarise(result)})"
                                + (f" after {attempt} attempts" if attempt > 1 else ""), failed=False)
                    return
                except InvokeError as e:
                    error = str(e)
                    if attempt < attempts:
                        print(f"router: {key} -> {route.binary}: attempt {attempt} of {attempts} failed "
                              f"({shorten(error)}); retrying", file=self.err, flush=True)
                        time.sleep(self.retry_delay * attempt)
            self.report(f"{key} -> {route.binary}: error after {attempts} attempt"
                        f"{'s' if attempts > 1 else ''} ({shorten(error)})", failed=True)
        except Exception as e:  # never lose an in-flight count
            self.report(f"{key} -> {route.binary}: error ({type(e).__name__}: {e})", failed=True)

    def report(self, line, failed):
        with self.lock:
            print(line, file=self.out, flush=True)
            self.invocations += 1
            self.failures += int(failed)
            self.in_flight -= 1
            self.last_activity = time.monotonic()

    def idle_for(self):
        with self.lock:
            if self.in_flight or not self.invocations:
                return 0.0
            return time.monotonic() - self.last_activity


def s3_client(endpoint, region):
    import boto3
    from botocore.config import Config
    return boto3.client(
        "s3", endpoint_url=endpoint or None, region_name=region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--template", default="template.yaml", help="SAM template to read routes from")
    parser.add_argument("--bucket", default=os.environ.get("STAGING_BUCKET"),
                        help="bucket to watch (default: $STAGING_BUCKET)")
    parser.add_argument("--invoke-url", default=os.environ.get("LAMBDA_INVOKE_URL", "http://127.0.0.1:9000"),
                        help="cargo lambda watch runtime (default: $LAMBDA_INVOKE_URL or http://127.0.0.1:9000)")
    parser.add_argument("--idle-exit", type=float, metavar="SECONDS",
                        help="exit once nothing new arrived for SECONDS after at least one invocation")
    parser.add_argument("--print-routes", action="store_true", help="print the route table and exit")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds one invocation may take, first compile included (default 1800)")
    parser.add_argument("--retry-delay", type=float, default=1.0,
                        help="seconds before the first retry, growing linearly (default 1)")
    args = parser.parse_args(argv)

    with open(args.template, encoding="utf-8") as f:
        routes = routes_from_template(load_template(f.read()))
    if args.print_routes:
        print(format_routes(routes))
        return 0
    if not routes:
        print(f"router: {args.template} has no S3 events: nothing to route", file=sys.stderr)
        return 2
    if not args.bucket:
        parser.error("--bucket or STAGING_BUCKET is required")

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    router = Router(
        s3_client(os.environ.get("AWS_ENDPOINT_URL"), region), args.bucket, routes,
        args.invoke_url, region, timeout=args.timeout, retry_delay=args.retry_delay,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    router.snapshot()
    print(f"router: watching s3://{args.bucket}/ ({', '.join(r.pattern() + ' -> ' + r.binary for r in routes)}); "
          f"invoking at {args.invoke_url}", file=sys.stderr, flush=True)
    while not stop.is_set():
        try:
            router.poll_once()
        except Exception as error:  # the emulator restarting, a timeout: keep polling
            print(f"router: listing s3://{args.bucket} failed: {error}", file=sys.stderr, flush=True)
        if args.idle_exit is not None and router.idle_for() >= args.idle_exit:
            break
        stop.wait(POLL_SECONDS)
    if stop.is_set():  # signalled: don't wait for invocations in flight
        print(f"router: stopped with {router.in_flight} invocation(s) in flight; "
              f"{router.invocations} routed, {router.failures} failed", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1 if router.failures or router.in_flight else 0)
    router.pool.shutdown(wait=True)
    print(f"router: {router.invocations} routed, {router.failures} failed", file=sys.stderr, flush=True)
    return 1 if router.failures else 0


if __name__ == "__main__":
    sys.exit(main())
