"""Prints a Google service account key file (JSON) with a fresh RSA key, for
local runs against fake-gcs-server and the Sheets double: Google's client
library signs its tokens with the key, so it must be a real key in Google's
key-file format, though no emulator checks it against Google.

Usage: python google_key.py CLIENT_EMAIL [PROJECT_ID]
"""
import json
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def key_file(client_email, project_id="local-project"):
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": "local0001",
        "private_key": pem,
        "client_email": client_email,
        "client_id": "100000000000000000001",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


if __name__ == "__main__":
    print(json.dumps(key_file(*sys.argv[1:3])))
