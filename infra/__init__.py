"""How Koala is deployed: task runners, expectation suites, local stack scripts."""
