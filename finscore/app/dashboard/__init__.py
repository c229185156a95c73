"""The live dashboard: a web page showing what flows, how fast, which model is live."""
