"""Engines in worker processes: the API process routes, queues and streams;
each served engine (chat, image) computes in a process of its own, below the
API's CPU priority, so ``/health`` and the page answer in milliseconds
whatever the engines do, and a crashed engine is restarted while the API
keeps answering.

    protocol.py   length-prefixed messages on a socket pair
    process.py    the API's side: WorkerProcess (start, readiness, calls, crash -> restart)
    main.py       the worker's side: python -m qwenhome.app.workers.main --fd N
    chat.py       the chat handler (transformers) and RemoteChatEngine
    (qwenhome.images.worker: the image handler (diffusers) and render())
"""
