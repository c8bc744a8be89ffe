"""`talkgs serve`: trained heads talking live in a browser, many sessions per device.

- :mod:`talkgs.serve.session`: one session's audio in, clock, frames and sound out (pure);
- :mod:`talkgs.serve.batcher`: every tick, the due frames of all sessions of a head rendered
  in one ``render_batch`` call (pure but for the device);
- :mod:`talkgs.serve.webrtc`: aiortc tracks (audio in; video and sound out);
- :mod:`talkgs.serve.app`: the session host (one device's sessions and batch loop), the aiohttp
  page, API and signalling in front of it; ``serve(cfg)``;
- :mod:`talkgs.serve.cluster`: ``--ray``: session hosts in Ray worker actors, one per GPU, and
  the front's placement and failure handling (imports Ray);
- :mod:`talkgs.serve.client`: a Python WebRTC client (benchmarks, tests).

The page is ``talkgs/serve/static/`` (package data). Needs the ``serve`` extra (aiohttp,
aiortc); session and batcher import neither.
"""
