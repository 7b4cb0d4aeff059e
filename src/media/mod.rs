//! Video sources, pixel conversion, H.264 encode/decode and recording.
