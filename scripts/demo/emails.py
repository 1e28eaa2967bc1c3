"""Prints the emails moto's SES accepted: recipients, subject and the text
body (decoded from the MIME message), so the demo shows the links.

Usage: python emails.py ENDPOINT
"""
import email
import json
import sys
import urllib.request

endpoint = sys.argv[1]
for attempt in range(20):
    try:
        data = json.load(urllib.request.urlopen(f"{endpoint}/moto-api/data.json"))
        break
    except Exception:  # moto answers 500 now and then right after uploads
        import time
        time.sleep(0.25)
else:
    sys.exit("could not read moto's data.json")

for message in data.get("ses", {}).get("RawMessage", []):
    parsed = email.message_from_string(message["raw_data"])
    print(f"-- to {parsed['To']}: {parsed['Subject']}")
    for part in parsed.walk():
        if part.get_content_type() == "text/plain":
            print(part.get_payload(decode=True).decode("utf-8"))
