//! Property tests: random observations never get an unsafe step; a simulated cluster converges.
