"""Test kit for the image engine: a tiny Qwen-Image snapshot in a home, and a
real server process (FastAPI + uvicorn on 127.0.0.1) around ``make_router``."""
