"""gRPC over HTTP/2, sans-IO: status codes, message framing, metadata; shared by the h2 server and client."""
