"""The wire: message schema, tensor framing, socket factory and endpoints."""
