"""A storefront's checkout, written with the official Stripe SDK (stripe-python), run against
souk's sandbox instead of Stripe: what docs/storefront.md ("Testing your integration offline")
tells integrators to do. Run by tests/it/sandbox_sdk.rs with SANDBOX_URL and SANDBOX_KEY set.
Exits non-zero on the first failed expectation."""

import os
import time

import stripe

url, key = os.environ["SANDBOX_URL"], os.environ["SANDBOX_KEY"]
client = stripe.StripeClient(key, base_addresses={"api": url}, max_network_retries=0)
pis = client.v1.payment_intents


def expect(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")


def checkout(method, capture_method="manual", amount=2500, **extra):
    return pis.create(params={"amount": amount, "currency": "eur", "capture_method": capture_method,
                              "confirm": True, "payment_method": method,
                              "metadata": {"order_id": "SF-1"}, **extra})


# An authorisation, captured in part, refunded in part: what souk does after checkout.
pi = checkout("pm_card_visa")
expect(pi.id.startswith("pi_") and pi.status == "requires_capture", f"authorised: {pi.status}")
expect(pi.amount_capturable == 2500 and pi.currency == "eur", "amounts")
expect(pis.retrieve(pi.id).status == "requires_capture", "retrieve")
captured = pis.capture(pi.id, params={"amount_to_capture": 1800})
expect(captured.status == "succeeded" and captured.amount_received == 1800, "captured 1800")
refund = client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 300})
expect(refund.status == "succeeded" and refund.amount == 300, "refunded 300")

# Automatic capture pays at once; a released authorisation is cancelled.
expect(checkout("pm_card_visa", capture_method="automatic").status == "succeeded", "automatic")
held = checkout("pm_card_visa")
expect(pis.cancel(held.id).status == "canceled", "cancelled")

# Stripe's test cards: declined (a CardError, the intent left needing a new method) and 3-D Secure.
try:
    checkout("pm_card_chargeDeclined")
    expect(False, "a declined card raises")
except stripe.CardError as e:
    expect(e.code == "card_declined" and e.http_status == 402, f"declined: {e.code}")
    expect(e.error.payment_intent.status == "requires_payment_method", "declined intent")
expect(checkout("pm_card_authenticationRequired").status == "requires_action", "3-D Secure")

# The sandbox's own method: processing for a while, then authorised.
slow = checkout("pm_sandbox_processing_300")
expect(slow.status == "processing", f"processing: {slow.status}")
time.sleep(0.5)
expect(pis.retrieve(slow.id).status == "requires_capture", "settled after processing")

# Idempotency-Key as Stripe keeps it: the same request answered again; other parameters refused.
a = pis.create(params={"amount": 900, "currency": "eur", "capture_method": "manual", "confirm": True,
                       "payment_method": "pm_card_visa"}, options={"idempotency_key": "order-SF-9"})
b = pis.create(params={"amount": 900, "currency": "eur", "capture_method": "manual", "confirm": True,
                       "payment_method": "pm_card_visa"}, options={"idempotency_key": "order-SF-9"})
expect(a.id == b.id, "replayed, not created twice")
try:
    pis.create(params={"amount": 901, "currency": "eur", "capture_method": "manual", "confirm": True,
                       "payment_method": "pm_card_visa"}, options={"idempotency_key": "order-SF-9"})
    expect(False, "a reused key with other parameters raises")
except stripe.IdempotencyError:
    pass

# Errors in Stripe's shape: a missing parameter, an unknown intent, a wrong key.
try:
    pis.create(params={"currency": "eur"})
    expect(False, "amount is required")
except stripe.InvalidRequestError as e:
    expect(e.code == "parameter_missing" and e.param == "amount", f"missing amount: {e.code}")
try:
    pis.retrieve("pi_nope")
    expect(False, "unknown intent")
except stripe.InvalidRequestError as e:
    expect(e.http_status == 404, "404")
try:
    stripe.StripeClient("sk_test_wrong", base_addresses={"api": url}).v1.payment_intents.retrieve(pi.id)
    expect(False, "a wrong key is refused")
except stripe.AuthenticationError:
    pass

print("ok: stripe-python", stripe.VERSION, "against", url)
