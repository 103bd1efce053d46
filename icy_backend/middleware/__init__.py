"""Pure-ASGI middleware: error envelope, body limit, API-key auth; the stack order lives in ``stack``."""
