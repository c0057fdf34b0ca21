"""`tts-pipeline http`: an OpenAI-compatible speech server in front of one pipeline (docs/http.md).

backend.py is the one place that knows the engine (an in-process `Pipeline`, or a running
`tts-pipeline serve`); everything else speaks HTTP. Importing this package needs nothing
beyond the engine; `app.py` and `server.py` need the `server` extra (fastapi, uvicorn, prometheus_client).
"""
