"""The HTTP API's authorizer: a request is let through only if it carries CloudFront's origin
header with the origin secret, so the execute-api endpoint is of no use around CloudFront (and
its WAF). Any of the secret's current, pending and previous values is accepted: while a rotation
propagates, CloudFront's edges send either. API Gateway caches each answer per header value
(edge.yaml), so this runs about once per edge location and TTL, not per request. The template
embeds this file byte for byte.
"""

import hmac
import os
import time
from typing import Any

import boto3  # type: ignore[import-untyped]

STAGES = ("AWSCURRENT", "AWSPENDING", "AWSPREVIOUS")
SECRETS_TTL_SECONDS = 60.0
_known: tuple[float, list[bytes]] = (float("-inf"), [])


def accepted_values() -> list[bytes]:
    """The secret's values, read again at most once a minute."""
    global _known
    read_at, values = _known
    if time.monotonic() - read_at < SECRETS_TTL_SECONDS:
        return values
    sm = boto3.client("secretsmanager")
    values = []
    for stage in STAGES:
        try:
            found = sm.get_secret_value(
                SecretId=os.environ["ORIGIN_SECRET_ARN"], VersionStage=stage
            )
        except sm.exceptions.ResourceNotFoundException:
            continue  # no pending or previous version right now
        values.append(found["SecretString"].encode())
    _known = (time.monotonic(), values)
    return values


def handler(event: dict[str, Any], context: object) -> dict[str, bool]:
    """API Gateway's simple response: isAuthorized. Header names arrive lower-cased."""
    given = (event.get("headers") or {}).get(os.environ["ORIGIN_HEADER"].lower(), "").encode()
    authorized = bool(given) and any(hmac.compare_digest(given, v) for v in accepted_values())
    return {"isAuthorized": authorized}
