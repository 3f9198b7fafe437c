"""One TLS context for every HTTP client the tests build.

httpx builds a new context per client by default, loading the whole CA bundle: tens of
milliseconds of CPU per request made with `httpx.post`, with the GIL held. The tests make
thousands of requests (to plain-HTTP loopback servers, where the context is never even used);
sharing one context keeps a request at about a millisecond without changing how it connects.
"""

import ssl

TLS = ssl.create_default_context()
