"""Schemathesis hooks for the contract test (test/e2e/test_contract.c).

Two rules of the contract that OpenAPI 3.0 cannot state in a schema are applied here to the
requests the generator means to be valid (negative tests are sent as generated):

- A real client sends a fresh Idempotency-Key with each new request, and the same key only when
  it retries that request. The generator has no notion of retries: it gives unrelated requests
  the same short keys ("0", "00"), which the server rightly answers 422 (docs/openapi.yaml, the
  IdempotencyKey parameter). A valid key is made unique, and stays valid. Replays of one key
  are tested in test/e2e/test_user_api.c and test/integration.
- The lines of an order name distinct SKUs (docs/openapi.yaml, PlaceOrder): a repeated SKU is
  given a suffix that keeps it within the SKU pattern.
"""
import re
import uuid

import schemathesis

VALID_KEY = re.compile(r"[ -~]{1,128}")
VALID_SKU = re.compile(r"[A-Z0-9][A-Z0-9-]{0,31}")


def _positive(case):
    meta = getattr(case, "meta", None)
    generation = getattr(meta, "generation", None)
    mode = getattr(generation, "mode", None)
    return bool(mode is not None and mode.is_positive)


def _distinct_skus(body):
    lines = body.get("lines") if isinstance(body, dict) else None
    if not isinstance(lines, list):
        return
    seen = set()
    for n, line in enumerate(lines):
        sku = line.get("sku") if isinstance(line, dict) else None
        if not isinstance(sku, str) or not VALID_SKU.fullmatch(sku):
            continue
        k = 0
        while sku in seen:
            k += 1
            sku = f"{line['sku'][:24]}-{n:03d}{k:03d}"
        line["sku"] = sku
        seen.add(sku)


@schemathesis.hook
def before_call(context, case, kwargs):
    if not _positive(case):
        return
    if case.operation.method.upper() == "POST" and case.operation.path == "/v1/orders":
        _distinct_skus(case.body)
    headers = case.headers
    if not headers:
        return
    for name in list(headers):
        if name.lower() != "idempotency-key":
            continue
        key = headers[name]
        if isinstance(key, str) and VALID_KEY.fullmatch(key):
            headers[name] = (key[:90] + "~" + uuid.uuid4().hex)[:128]
