"""The issuer and holder side: PKI, issuance, holders, demo material, scenarios, test
vectors, file inspection and the region table.

The serving path never imports this package (tests/test_layering.py holds that):
it is what the national platform, tests, demos and the load generator use to make
the data the engine checks.
"""
