"""The complete system: an HTTP API (OpenAI-compatible chat, model management,
doctor) and a web page, served from the home.

Importing this package is cheap: FastAPI is imported by :mod:`.server`, and
inference engines (torch, transformers, diffusers) only in their worker
processes (:mod:`.workers`), never in the API's.

    app = create_app(AppState(settings, "Org/Name", snapshot=path))   # qwenhome.app.server
    run_launch(settings, model=..., demo=True)                         # qwenhome.app.launch
"""
