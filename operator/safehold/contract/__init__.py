"""What the operator and the movers both know: the movers' environment and their result.

The operator fills a mover Job's environment (`env`) and reads back the one JSON document
the mover writes (`result`); the mover reads the same environment and writes that document.
Both sides import these two modules and nothing of each other.
"""
