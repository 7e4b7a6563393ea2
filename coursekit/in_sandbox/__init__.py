"""The code that runs inside the sandbox. The host mounts this folder read-only and runs `worker.py`
there; nothing here imports `coursekit`: the host and this side share only `protocol.py`."""
