"""psgvlm command line."""
