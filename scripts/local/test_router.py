"""Offline tests of the local S3-notification router's pure parts.

    .venv/bin/python -m unittest scripts/local/test_router.py
"""

import datetime as dt
import http.server
import io
import json
import os
import sys
import threading
import time
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import router  # noqa: E402

# A small stand-in with the shapes template.yaml uses: short-form tags,
# Binary in BuildProperties, a CodeUri-named function, prefix+suffix rules,
# EventInvokeConfig by !Ref, a Schedule event that is not routed.
TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Prefix: {Type: String, Default: tenants/}
Conditions:
  Never: !Equals [!Ref Prefix, "x"]
Globals:
  Function:
    Runtime: provided.al2023
    Architectures: [!Ref AWS::NoValue]
Resources:
  Staging:
    Type: AWS::S3::Bucket
    Properties:
      BucketName: !Sub ${AWS::StackName}-staging-${AWS::AccountId}
  Rank:
    Type: AWS::Serverless::Function
    Metadata: {BuildMethod: rust-cargolambda, BuildProperties: {Binary: rank}}
    Properties:
      CodeUri: .
      Environment:
        Variables:
          STAGING_BUCKET: !Sub ${AWS::StackName}-staging-${AWS::AccountId}
          ARN: !GetAtt Staging.Arn
      Events:
        Twice: {Type: Schedule, Properties: {Schedule: "cron(0 3 ? * MON,THU *)"}}
  Fanout:
    Type: AWS::Serverless::Function
    Metadata:
      BuildMethod: rust-cargolambda
      BuildProperties:
        Binary: fanout
    Properties:
      CodeUri: .
      Events:
        ManifestCreated:
          Type: S3
          Properties:
            Bucket: !Ref Staging
            Events: s3:ObjectCreated:*
            Filter:
              S3Key:
                Rules:
                  - Name: prefix
                    Value: manifests/
                  - Name: suffix
                    Value: .json
  DeliverS3:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/deliver-s3/
      Events:
        Jobs:
          Type: S3
          Properties:
            Bucket: !Ref Staging
            Events: [s3:ObjectCreated:Put, s3:ObjectCreated:CompleteMultipartUpload]
            Filter: {S3Key: {Rules: [{Name: Prefix, Value: jobs/s3/}]}}
  DeliverEmail:
    Type: AWS::Serverless::Function
    Metadata: {BuildProperties: {Binary: deliver-email}}
    Properties:
      CodeUri: .
      FunctionName: !Sub ${AWS::StackName}-deliver-email
      EventInvokeConfig: {MaximumRetryAttempts: 1}
      Events:
        Jobs:
          Type: S3
          Properties:
            Bucket: !Ref Staging
            Events: s3:ObjectCreated:Put
            Filter: {S3Key: {Rules: [{Name: prefix, Value: jobs/email/}, {Name: suffix, Value: .json}]}}
  FanoutInvokeConfig:
    Type: AWS::Lambda::EventInvokeConfig
    Properties:
      FunctionName: !Ref Fanout
      Qualifier: $LATEST
      MaximumRetryAttempts: 0
      DestinationConfig: {OnFailure: {Destination: !GetAtt Queue.Arn}}
  DeliverS3InvokeConfig:
    Type: AWS::Lambda::EventInvokeConfig
    Properties:
      FunctionName: !Ref DeliverS3
      Qualifier: $LATEST
      MaximumRetryAttempts: 1
  Queue:
    Type: AWS::SQS::Queue
Outputs:
  Sel:
    Value: !Select [1, !Split ["@", !Ref Prefix]]
"""


def routes_by_binary(text=TEMPLATE):
    return {r.binary: r for r in router.routes_from_template(router.load_template(text))}


class TemplateTests(unittest.TestCase):
    def test_short_tags_load_as_long_form(self):
        t = router.load_template(TEMPLATE)
        env = t["Resources"]["Rank"]["Properties"]["Environment"]["Variables"]
        self.assertEqual(env["STAGING_BUCKET"], {"Fn::Sub": "${AWS::StackName}-staging-${AWS::AccountId}"})
        self.assertEqual(env["ARN"], {"Fn::GetAtt": ["Staging", "Arn"]})
        self.assertEqual(t["Conditions"]["Never"], {"Fn::Equals": [{"Ref": "Prefix"}, "x"]})
        self.assertEqual(t["Outputs"]["Sel"]["Value"],
                         {"Fn::Select": [1, {"Fn::Split": ["@", {"Ref": "Prefix"}]}]})

    def test_route_table(self):
        routes = routes_by_binary()
        self.assertEqual(set(routes), {"fanout", "deliver-s3", "deliver-email"})  # rank: Schedule only
        fanout = routes["fanout"]
        self.assertEqual((fanout.prefix, fanout.suffix, fanout.bucket), ("manifests/", ".json", "Staging"))
        self.assertEqual((fanout.function, fanout.event, fanout.events),
                         ("Fanout", "ManifestCreated", ("s3:ObjectCreated:*",)))
        self.assertEqual(fanout.retries, 0)
        self.assertEqual(routes["deliver-s3"].prefix, "jobs/s3/")  # Name matched case-insensitively
        self.assertEqual(routes["deliver-s3"].suffix, "")
        self.assertEqual(routes["deliver-s3"].retries, 1)
        self.assertEqual(routes["deliver-email"].retries, 1)  # SAM's EventInvokeConfig property

    def test_binary_from_code_uri_folder(self):
        self.assertEqual(routes_by_binary()["deliver-s3"].function, "DeliverS3")

    def test_default_retries(self):
        text = TEMPLATE.replace("MaximumRetryAttempts: 0", "MaximumEventAgeInSeconds: 60")
        self.assertEqual(routes_by_binary(text)["fanout"].retries, router.DEFAULT_RETRIES)

    def test_function_without_binary_or_folder_is_an_error(self):
        text = TEMPLATE.replace("Binary: fanout", "Other: x")
        with self.assertRaisesRegex(ValueError, "Fanout: cannot tell its binary"):
            router.routes_from_template(router.load_template(text))

    def test_json_template(self):
        t = router.load_template(json.dumps({"Resources": {"F": {
            "Type": "AWS::Serverless::Function",
            "Properties": {"CodeUri": "functions/fanout", "Events": {"E": {"Type": "S3", "Properties": {
                "Bucket": {"Ref": "B"}, "Events": "s3:ObjectCreated:*"}}}}}}}))
        (route,) = router.routes_from_template(t)
        self.assertEqual((route.binary, route.prefix, route.suffix, route.retries), ("fanout", "", "", 2))

    def test_not_a_template(self):
        with self.assertRaises(ValueError):
            router.load_template("just: text\n")

    def test_print_routes(self):
        text = router.format_routes(router.routes_from_template(router.load_template(TEMPLATE)))
        self.assertIn("manifests/*.json", text)
        self.assertIn("-> fanout", text)

    def test_list_prefixes(self):
        routes = router.routes_from_template(router.load_template(TEMPLATE))
        self.assertEqual(router.list_prefixes(routes), ["jobs/email/", "jobs/s3/", "manifests/"])
        self.assertEqual(router.list_prefixes(routes + [routes[0].__class__(
            function="X", event="E", binary="x", bucket="B", prefix="jobs/", suffix="",
            events=("s3:ObjectCreated:*",), retries=2)]), ["jobs/", "manifests/"])


class RealTemplateTests(unittest.TestCase):
    """The project's own template.yaml, once it exists: manifests/ -> fanout,
    and jobs/<kind>/ and connection-tests/<kind>/ -> deliver-<kind>."""

    def test_project_template(self):
        path = os.path.join(ROOT, "template.yaml")
        if not os.path.exists(path):
            self.skipTest("no template.yaml yet")
        with open(path, encoding="utf-8") as f:
            routes = router.routes_from_template(router.load_template(f.read()))
        table = {}
        for r in routes:
            table.setdefault(r.binary, set()).add(r.prefix)
        self.assertEqual(table["fanout"], {"manifests/"})
        for kind in ("s3", "email", "gcs", "sheets"):
            self.assertEqual(table[f"deliver-{kind}"], {f"jobs/{kind}/", f"connection-tests/{kind}/"})
        self.assertNotIn("rank", table)
        for r in routes:
            self.assertTrue(os.path.isdir(os.path.join(ROOT, "functions", r.binary)), r.binary)


class MatchingTests(unittest.TestCase):
    def setUp(self):
        self.routes = router.routes_from_template(router.load_template(TEMPLATE))

    def binaries(self, key, event_name="ObjectCreated:Put"):
        return [r.binary for r in router.matching_routes(self.routes, key, event_name)]

    def test_prefix_and_suffix(self):
        self.assertEqual(self.binaries("manifests/20261119030000.json"), ["fanout"])
        self.assertEqual(self.binaries("manifests/20261119030000.json.tmp"), [])
        self.assertEqual(self.binaries("manifests/notes.txt"), [])
        self.assertEqual(self.binaries("reports/track_popularity/20261119030000/part-001.json"), [])
        self.assertEqual(self.binaries("status/20261119030000/acme/all.json"), [])
        self.assertEqual(self.binaries("jobs/s3/20261119030000/acme/all.json"), ["deliver-s3"])
        self.assertEqual(self.binaries("jobs/email/20261119030000/acme/weekly-tracks.json"), ["deliver-email"])
        self.assertEqual(self.binaries("jobs/sheets/20261119030000/gamma/top-100.json"), [])

    def test_case_sensitive(self):
        self.assertEqual(self.binaries("Manifests/1.json"), [])
        self.assertEqual(self.binaries("manifests/1.JSON"), [])

    def test_event_types(self):
        self.assertTrue(router.event_type_matches(["s3:ObjectCreated:*"], "ObjectCreated:Copy"))
        self.assertFalse(router.event_type_matches(["s3:ObjectRemoved:*"], "ObjectCreated:Put"))
        self.assertFalse(router.event_type_matches(["s3:ObjectCreated:Post"], "ObjectCreated:Put"))
        # deliver-email listens for Put only
        self.assertEqual(self.binaries("jobs/email/r/t/f.json", "ObjectCreated:CompleteMultipartUpload"), [])
        self.assertEqual(self.binaries("jobs/s3/r/t/f.json", "ObjectCreated:CompleteMultipartUpload"),
                         ["deliver-s3"])

    def test_event_name_from_etag(self):
        self.assertEqual(router.event_name_for('"d41d8cd98f00b204e9800998ecf8427e"'), "ObjectCreated:Put")
        self.assertEqual(router.event_name_for('"0c78aef83f66abc1fa1e8477f296d394-3"'),
                         "ObjectCreated:CompleteMultipartUpload")


class EncodingTests(unittest.TestCase):
    def test_encode_like_s3(self):
        self.assertEqual(router.encode_key("manifests/20261119030000.json"), "manifests/20261119030000.json")
        self.assertEqual(router.encode_key("jobs/s3/r/beta music/a b.json"), "jobs/s3/r/beta+music/a+b.json")
        self.assertEqual(router.encode_key("a+b=c&d.json"), "a%2Bb%3Dc%26d.json")
        self.assertEqual(router.encode_key("café/ü.json"), "caf%C3%A9/%C3%BC.json")
        self.assertEqual(router.encode_key("x%20y"), "x%2520y")

    def test_round_trip(self):
        for key in ["jobs/s3/20261119030000/beta-music/lake-tsv.json", "a b+c/%/ü?#.json", "~_.-*()'!"]:
            self.assertEqual(urllib.parse.unquote_plus(router.encode_key(key)), key)


class EventTests(unittest.TestCase):
    def event(self, key="manifests/20261119030000.json"):
        return router.s3_event(
            bucket="popularity-staging", key=key, size=4711, etag='"d41d8cd98f00b204e9800998ecf8427e"',
            event_time=dt.datetime(2026, 11, 19, 3, 4, 12, 345678, tzinfo=dt.timezone.utc),
            region="us-east-1", sequencer="0A1B2C3D4E5F678901", configuration_id="FanoutManifestCreated",
            request_id="C3D13FE58DE4C810",
        )

    def test_same_shape_as_the_sample_event(self):
        with open(os.path.join(ROOT, "events", "fanout", "manifest-created.json"), encoding="utf-8") as f:
            sample = json.load(f)

        def shape(value):
            if isinstance(value, dict):
                return {k: shape(v) for k, v in value.items()}
            if isinstance(value, list):
                return [shape(v) for v in value]
            return type(value).__name__

        self.assertEqual(shape(self.event()), shape(sample))

    def test_fields(self):
        (record,) = self.event()["Records"]
        self.assertEqual(record["eventSource"], "aws:s3")
        self.assertEqual(record["eventName"], "ObjectCreated:Put")
        self.assertEqual(record["eventTime"], "2026-11-19T03:04:12.345Z")
        self.assertEqual(record["awsRegion"], "us-east-1")
        s3 = record["s3"]
        self.assertEqual(s3["bucket"], {"name": "popularity-staging",
                                        "ownerIdentity": {"principalId": "A3NL1KOZZKLOCAL"},
                                        "arn": "arn:aws:s3:::popularity-staging"})
        self.assertEqual(s3["object"], {"key": "manifests/20261119030000.json", "size": 4711,
                                        "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                                        "sequencer": "0A1B2C3D4E5F678901"})
        self.assertEqual(s3["configurationId"], "FanoutManifestCreated")

    def test_key_is_encoded(self):
        (record,) = self.event("jobs/s3/r/beta music/a=b.json")["Records"]
        self.assertEqual(record["s3"]["object"]["key"], "jobs/s3/r/beta+music/a%3Db.json")

    def test_naive_time_is_utc(self):
        event = router.s3_event(bucket="b", key="k", size=0, etag="e", event_time=dt.datetime(2026, 1, 2, 3, 4, 5),
                                region="r", sequencer="1", configuration_id="c")
        self.assertEqual(event["Records"][0]["eventTime"], "2026-01-02T03:04:05.000Z")


class SummaryTests(unittest.TestCase):
    def test_fanout(self):
        text = router.summarise({"runIds": ["20261119030000"], "tenants": 3, "jobsCreated": 3,
                                 "jobsAlreadyExisting": 0, "invalidTenants": 0, "feedsNotDelivered": 1})
        self.assertEqual(text, "runIds=20261119030000 tenants=3 jobsCreated=3 jobsAlreadyExisting=0 "
                               "invalidTenants=0 feedsNotDelivered=1")

    def test_deliver(self):
        text = router.summarise({"jobs": [{"jobKey": "jobs/s3/r/acme/all.json", "statusKey": "status/r/acme/all.json",
                                           "outcome": "delivered", "objects": 4, "bytes": 1234}]})
        self.assertEqual(text, "jobs: outcome=delivered objects=4 bytes=1234")

    def test_long_is_cut(self):
        self.assertTrue(router.summarise({"x": "y" * 1000}).endswith("..."))
        self.assertLessEqual(len(router.summarise({"x": "y" * 1000})), 240)

    def test_shorten(self):
        self.assertEqual(router.shorten("a\n  b"), "a b")
        long = router.shorten("x" * 5000)
        self.assertEqual(len(long), 400)
        self.assertTrue(long.endswith("(cut; see the function log)"))

    def test_error_bodies(self):
        self.assertEqual(router.describe_error(b'{"errorType":"DeliveryFailed","errorMessage":"boom"}'),
                         "DeliveryFailed: boom")
        self.assertEqual(router.describe_error(b"plain text"), "plain text")


class FakeRuntime(http.server.ThreadingHTTPServer):
    """A `cargo lambda watch` stand-in on 127.0.0.1: answers each function
    with the scripted results, in order (an int is an HTTP error status)."""

    def __init__(self, script):
        self.script = {name: list(results) for name, results in script.items()}
        self.calls = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                name = self.path.split("/")[3]
                outer.calls.append((self.path, body))
                result = outer.script[name].pop(0)
                status, payload = (500, {"errorType": "DeliveryFailed", "errorMessage": f"attempt {len(outer.calls)}"}) \
                    if result == 500 else (200, result)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class FakeS3:
    """ListObjectsV2 pages of a changing bucket."""

    class exceptions:
        class NoSuchBucket(Exception):
            pass

    def __init__(self):
        self.objects = {}
        self.prefixes = []

    def put(self, key, etag="abc", size=10):
        self.objects[key] = {"Key": key, "ETag": f'"{etag}"', "Size": size,
                             "LastModified": dt.datetime(2026, 11, 19, 3, 4, 5, tzinfo=dt.timezone.utc)}

    def get_paginator(self, name):
        assert name == "list_objects_v2"
        fake = self

        class Paginator:
            def paginate(self, Bucket, Prefix):
                fake.prefixes.append(Prefix)
                yield {"Contents": [o for k, o in sorted(fake.objects.items()) if k.startswith(Prefix)]}

        return Paginator()


class RouterLoopTests(unittest.TestCase):
    def make(self, script):
        runtime = FakeRuntime(script)
        self.addCleanup(runtime.server_close)
        self.addCleanup(runtime.shutdown)
        s3 = FakeS3()
        out = io.StringIO()
        routes = router.routes_from_template(router.load_template(TEMPLATE))
        r = router.Router(s3, "staging", routes, runtime.url, "us-east-1", timeout=10, retry_delay=0, out=out,
                          err=io.StringIO())
        return r, s3, runtime, out

    def settle(self, r):
        r.pool.shutdown(wait=True)

    def test_only_new_objects_are_routed(self):
        r, s3, runtime, out = self.make({"fanout": [{"jobsCreated": 2}], "deliver-s3": [{"jobs": []}]})
        s3.put("manifests/old.json")
        r.snapshot()
        s3.put("manifests/20261119030000.json")
        s3.put("jobs/s3/r/beta music/f.json")
        s3.put("jobs/sheets/r/t/f.json")  # no route
        s3.put("reports/track_popularity/r/part-001.json")  # not even listed
        self.assertEqual(r.poll_once(), 2)
        self.assertEqual(r.poll_once(), 0)  # seen
        self.settle(r)
        self.assertEqual(sorted(p.split("/")[3] for p, _ in runtime.calls), ["deliver-s3", "fanout"])
        events = {p.split("/")[3]: e for p, e in runtime.calls}
        self.assertEqual(events["deliver-s3"]["Records"][0]["s3"]["object"]["key"], "jobs/s3/r/beta+music/f.json")
        self.assertEqual(events["fanout"]["Records"][0]["s3"]["bucket"]["name"], "staging")
        self.assertEqual(events["fanout"]["Records"][0]["s3"]["configurationId"], "FanoutManifestCreated")
        lines = sorted(out.getvalue().splitlines())
        self.assertEqual(lines, ["jobs/s3/r/beta music/f.json -> deliver-s3: ok ()",
                                 "manifests/20261119030000.json -> fanout: ok (jobsCreated=2)"])
        self.assertEqual((r.invocations, r.failures, r.in_flight), (2, 0, 0))
        self.assertNotIn("reports/", s3.prefixes)

    def test_overwritten_object_is_routed_again(self):
        r, s3, runtime, out = self.make({"fanout": [{}, {}]})
        r.snapshot()
        s3.put("manifests/1.json", etag="one")
        r.poll_once()
        s3.put("manifests/1.json", etag="two")
        r.poll_once()
        self.settle(r)
        self.assertEqual(len(runtime.calls), 2)

    def test_retries_then_succeeds(self):
        r, s3, runtime, out = self.make({"deliver-s3": [500, {"jobs": []}]})  # DeliverS3: 1 retry
        r.snapshot()
        s3.put("jobs/s3/r/t/f.json")
        r.poll_once()
        self.settle(r)
        self.assertEqual(len(runtime.calls), 2)
        self.assertEqual(out.getvalue(), "jobs/s3/r/t/f.json -> deliver-s3: ok () after 2 attempts\n")
        self.assertEqual(r.failures, 0)

    def test_gives_up_after_the_retry_count(self):
        r, s3, runtime, out = self.make({"deliver-s3": [500, 500, {}]})
        r.snapshot()
        s3.put("jobs/s3/r/t/f.json")
        r.poll_once()
        self.settle(r)
        self.assertEqual(len(runtime.calls), 2)  # 1 + MaximumRetryAttempts 1
        self.assertEqual(out.getvalue(),
                         "jobs/s3/r/t/f.json -> deliver-s3: error after 2 attempts (DeliveryFailed: attempt 2)\n")
        self.assertEqual(r.failures, 1)

    def test_unreachable_runtime(self):
        r, s3, runtime, out = self.make({})
        r.invoke_url = "http://127.0.0.1:9"  # discard port: nothing listens
        r.routes = [dataclasses_replace(x, retries=0) for x in r.routes]
        r.snapshot()
        s3.put("manifests/1.json")
        r.poll_once()
        self.settle(r)
        self.assertIn("manifests/1.json -> fanout: error after 1 attempt (cannot reach", out.getvalue())

    def test_idle(self):
        r, s3, runtime, out = self.make({"fanout": [{}]})
        r.snapshot()
        self.assertEqual(r.idle_for(), 0.0)  # nothing invoked yet: never idle
        s3.put("manifests/1.json")
        r.poll_once()
        self.settle(r)
        time.sleep(0.05)
        self.assertGreater(r.idle_for(), 0.0)


def dataclasses_replace(route, **changes):
    import dataclasses
    return dataclasses.replace(route, **changes)


if __name__ == "__main__":
    unittest.main()
