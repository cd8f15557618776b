"""An Alpaca protocol simulator on loopback, for tests, the demo and users' integration tests."""
