"""Transforms the SAM template offline, as CloudFormation would on deploy,
and writes the result as JSON: AWS::Serverless::Function resources become
AWS::Lambda::Function plus an AWS::IAM::Role holding the function's policies,
and AWS::Serverless::StateMachine resources an AWS::StepFunctions::StateMachine
(its local definition file read in) plus its role.
Used by scripts/check-template.sh (which lints the result) and by the
least-privilege test (tests/tests/least_privilege_against_moto.rs, which
attaches each role's policies to a principal on moto). It only reads the
template: it contacts no AWS service and needs no credentials.

Usage: python transform_template.py TEMPLATE OUTPUT.json

aws-sam-translator (samtranslator) is installed into this interpreter's
environment (the project's .venv) when it is missing; the SAM CLI brings the
same package.
"""
import importlib
import json
import os
import subprocess
import sys


def samtranslator_modules():
    try:
        importlib.import_module("samtranslator")
    except ImportError:
        print("transform_template: installing aws-sam-translator (once)", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "aws-sam-translator"])
        importlib.invalidate_caches()
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    return transform, yaml_parse


class OfflineManagedPolicies:
    """The transform asks IAM for AWS managed policy ARNs only when a
    function's Policies name one; this template names none, so no lookup."""

    def load(self):
        return {}


def transformed(source):
    # The translator needs a region only to pick the partition (aws).
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    transform, yaml_parse = samtranslator_modules()
    with open(source) as f:
        template = json.loads(json.dumps(yaml_parse(f.read())))
    root = os.path.dirname(os.path.abspath(source))
    for resource in template.get("Resources", {}).values():
        # Local code paths are replaced by what `sam package` would upload.
        if resource.get("Type") == "AWS::Serverless::Function":
            resource.setdefault("Properties", {})["CodeUri"] = "s3://placeholder-bucket/function.zip"
        # A state machine's local definition file is read in, as `sam
        # package` uploads it: the transform then writes the definition with
        # its substitutions, which cfn-lint checks and the tests read.
        properties = resource.get("Properties", {})
        uri = properties.get("DefinitionUri")
        if resource.get("Type") == "AWS::Serverless::StateMachine" and isinstance(uri, str) and "://" not in uri:
            with open(os.path.join(root, uri)) as f:
                properties["Definition"] = json.load(f)
            del properties["DefinitionUri"]
    return transform(template, {}, OfflineManagedPolicies())


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    source, target = argv[1], argv[2]
    try:
        result = transformed(source)
    except Exception as error:  # the translator's errors list every problem
        sys.exit(f"SAM transform failed: {error}")
    with open(target, "w") as out:
        json.dump(result, out, indent=2)


if __name__ == "__main__":
    main(sys.argv)
