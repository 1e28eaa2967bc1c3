"""Sets up the *customer* side of the demo, as three customers would on their
own accounts — two on AWS (moto's server), one on Google Cloud Storage
(fake-gcs-server: a bucket, and a service account key the customer would
create and grant Storage Object Creator on it) — plus the operator's SES
sender and link-signing user. Not part of the product: our system only ever
writes into these buckets. Prints one JSON object with what the tenant
secrets need.

Usage: python customers.py ENDPOINT OUR_ACCOUNT_ID GCS_ENDPOINT OUR_GOOGLE_KEY_FILE
       OUR_GOOGLE_SECRET ACME_EXTERNAL_ID
"""
import json
import sys
import urllib.request

import os

import boto3

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "local"))
from google_key import key_file  # noqa: E402 (after the path is set)

endpoint, our_account, gcs_endpoint = sys.argv[1], sys.argv[2], sys.argv[3]
# Our Google service account's key file (written by the local Sheets double)
# and the secret deliver-sheets reads it from.
our_google_key_file, our_google_secret = sys.argv[4], sys.argv[5]
# The externalId we generated for acme (`popularity tenant external-id acme`).
acme_external_id = sys.argv[6]
common = dict(endpoint_url=endpoint, region_name="us-east-1")


def client(service, credentials=None):
    keys = credentials or {"aws_access_key_id": "demo", "aws_secret_access_key": "demo"}
    return boto3.client(service, **common, **keys)


def account(account_id):
    """Credentials acting as another account (moto trusts any AssumeRole)."""
    role = f"arn:aws:iam::{account_id}:role/demo-account-admin"
    c = client("sts").assume_role(RoleArn=role, RoleSessionName="demo")["Credentials"]
    return {
        "aws_access_key_id": c["AccessKeyId"],
        "aws_secret_access_key": c["SecretAccessKey"],
        "aws_session_token": c["SessionToken"],
    }


def write_only_policy(bucket):
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
             "Resource": f"arn:aws:s3:::{bucket}/*"},
            {"Effect": "Allow", "Action": "s3:ListBucketMultipartUploads",
             "Resource": f"arn:aws:s3:::{bucket}"},
        ],
    })


def ensure_bucket(s3, name):
    try:
        s3.create_bucket(Bucket=name)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass


# acme (account 222222222222): a role we assume with an external id. Its
# trust names deliver-s3's role (the stack output DeliverS3RoleArn), never
# our whole account, and requires the externalId we generated for acme.
acme = account("222222222222")
ensure_bucket(client("s3", acme), "acme-data-demo")
iam = client("iam", acme)
deliver_s3_role = f"arn:aws:iam::{our_account}:role/popularity-reports-DeliverS3FunctionRole"
trust = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"AWS": deliver_s3_role},
                   "Action": "sts:AssumeRole",
                   "Condition": {"StringEquals": {"sts:ExternalId": acme_external_id}}}],
}
role = iam.create_role(RoleName="popularity-delivery", AssumeRolePolicyDocument=json.dumps(trust))["Role"]
iam.put_role_policy(RoleName="popularity-delivery", PolicyName="popularity-delivery",
                    PolicyDocument=write_only_policy("acme-data-demo"))

# beta-music (account 333333333333): keys of a user it created for us.
beta = account("333333333333")
ensure_bucket(client("s3", beta), "beta-data-demo")
iam = client("iam", beta)
iam.create_user(UserName="popularity-delivery")
iam.put_user_policy(UserName="popularity-delivery", PolicyName="popularity-delivery",
                    PolicyDocument=write_only_policy("beta-data-demo"))
beta_key = iam.create_access_key(UserName="popularity-delivery")["AccessKey"]

# Operator side: verified sender and the link-signing user's keys in a secret.
client("ses").verify_email_identity(EmailAddress="reports@popularity.example")
iam = client("iam")
iam.create_user(UserName="popularity-link-signer")
signer_key = iam.create_access_key(UserName="popularity-link-signer")["AccessKey"]
client("secretsmanager").create_secret(
    Name="popularity-reports/link-signer",
    SecretString=json.dumps({"accessKeyId": signer_key["AccessKeyId"],
                             "secretAccessKey": signer_key["SecretAccessKey"]}),
)

# Operator side: our Google service account, whose address Sheets customers
# share their spreadsheets with.
# With keyless Google (the demo's way) there is none: "-".
if our_google_secret != "-":
    with open(our_google_key_file) as key:
        client("secretsmanager").create_secret(Name=our_google_secret, SecretString=key.read())

# gamma (Google Cloud): a bucket and a service account key. fake-gcs-server
# checks no credentials, but Google's client library signs with the key, so
# it is a real RSA key in Google's key-file format.
request = urllib.request.Request(
    f"{gcs_endpoint}/storage/v1/b?project=gamma-analytics",
    data=json.dumps({"name": "gamma-feeds-demo"}).encode(),
    headers={"Content-Type": "application/json"},
    method="POST",
)
try:
    urllib.request.urlopen(request).read()
except urllib.error.HTTPError as error:
    if error.code != 409:  # already there from an earlier run
        raise
gamma_key = key_file("popularity-feeds@gamma-analytics.iam.gserviceaccount.com", "gamma-analytics")

json.dump({
    "gammaServiceAccountJson": gamma_key,
    "acmeRoleArn": role["Arn"],
    "betaAccessKeyId": beta_key["AccessKeyId"],
    "betaSecretAccessKey": beta_key["SecretAccessKey"],
}, sys.stdout)
