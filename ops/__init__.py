"""relayctl: the operator's command line, a thin shell over the relay's own library code."""
