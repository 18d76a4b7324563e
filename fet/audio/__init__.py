"""Speech input: decoding any common audio format to 16 kHz mono, and per-frame audio features."""
