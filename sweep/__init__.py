"""The machinery: oracle, data, pool, trial loop, results, command-line tools."""
