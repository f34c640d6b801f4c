"""ray-realtime: realtime voice and streaming agents whose sessions live in Ray actors."""
