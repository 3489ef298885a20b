"""The KServe-v2 REST frontend over HTTP/1.1 (``tailmark serve --http-port N``)."""
