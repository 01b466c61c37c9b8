"""The stand-in for WhatsApp's network in dev and tests: `driver.SimulatorDriver` and the
simulated server behind it, driven by the phone actions of `actions` (`python -m devstack
phone ...`). Never used in production."""
