"""Sandbox upstream: local emulators of the providers the relay forwards to, with switchable faults.

Tests, the README demo and benchmarks point upstream accounts at it instead of a real provider.
One app (``python -m relay.sandbox --port P``) serves them all on one port:

* the OpenAI Videos contract at ``/v1`` (also ``/backend-api`` and the root), bearer tokens
  (openai_contract.py);
* Azure OpenAI's variant of the same contract at ``/openai/v1``, ``api-key`` header only (azure.py);
* Gemini's Veo long-running operations at ``/v1beta``, ``x-goog-api-key`` (gemini.py), whose file
  downloads redirect to a stand-in for Google's storage at ``/_gcs`` (storage.py).
* BytePlus ModelArk's Seedance video tasks at ``/byteplus/api/v3``, bearer tokens (byteplus.py), whose
  finished videos are signed links under ``/byteplus/tos`` that need no key.
* Runway's tasks at ``/runway/v1``, bearer tokens plus ``X-Runway-Version`` (runway.py), whose
  finished videos are signed CDN links under ``/runway/cdn`` that need no key.
* fal's queue at ``/fal``, ``Authorization: Key`` (fal.py), whose results link a stand-in for fal's
  CDN at ``/_falcdn`` under loopback's other name (another origin, as fal's CDN is) that needs no key.

The control API under ``/_sandbox`` (control.py) injects fault rules, shared by every provider, and
shows every request the providers received. A rule matches on ``method``, ``path_contains``,
``token`` (the account credential, whichever header carries it) and ``provider`` (``openai``,
``azure``, ``gemini``, ``byteplus``, ``runway`` or ``fal``); ``probability`` (0..1, default 1) makes a matching rule apply to only
that share of requests, at random (``--seed`` makes the draw repeatable). A rule that does not apply
consumes none of its ``times`` and lets later rules try. A ``preset`` (faults.py) answers as each
provider words that failure; the actions (``respond``, ``reset``, ``slow_body``) are in gate.py.
"""

from .app import SandboxOptions, create_sandbox_app, run_sandbox

__all__ = ["SandboxOptions", "create_sandbox_app", "run_sandbox"]
