"""Hooks for the schemathesis run in schemathesis.test.ts (loaded through SCHEMATHESIS_HOOKS).

The server refuses, by design and as its OpenAPI document says, a body holding an object key
"__proto__" or a "constructor" key holding a "prototype" key (prototype poisoning; ts/http/body.ts,
tested in bad-requests.test.ts). JSON Schema cannot say "no such key at any depth" of an
unconstrained value, so schemathesis would count that documented refusal as valid data rejected.
Bodies holding such keys are not generated; nothing else is filtered.
"""

import schemathesis


def poisoned(value):
    if isinstance(value, dict):
        if "__proto__" in value:
            return True
        held = value.get("constructor")
        if isinstance(held, dict) and "prototype" in held:
            return True
        return any(poisoned(v) for v in value.values())
    if isinstance(value, list):
        return any(poisoned(v) for v in value)
    return False


@schemathesis.hook
def filter_body(context, body):
    return not poisoned(body)
